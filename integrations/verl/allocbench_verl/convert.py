"""verl-side data in plain Python: prompt batches and TransferQueue trajectories.

Nothing here knows AllocBench's types (``allocbench_verl.adapter`` does); nothing there knows
TensorDict or TransferQueue.
"""
from __future__ import annotations

import numpy as np
import torch
import transfer_queue as tq


def _column(batch, key):
    value = batch[key]
    if isinstance(value, torch.Tensor):
        return value.reshape(-1).tolist()
    return list(value)


def prompt_rows(batch) -> list[tuple[int, str]]:
    """``(pid, text)`` of each prompt of a verl prompt batch.

    ``pid`` is the dataset's ``extra_info.index`` (verl's RLHFDataset puts it in ``index``): the
    prompt's stable position in the training pool, which the methods key their state by.
    """
    if "index" not in batch.keys():
        raise ValueError("verl prompt batch has no 'index': give every training row an "
                         "extra_info.index (its position in the training file)")
    pids = [int(p) for p in _column(batch, "index")]
    if len(set(pids)) != len(pids):
        raise ValueError(f"prompt batch repeats an extra_info.index ({sorted(pids)}): each "
                         f"training row needs its own")
    texts = []
    for messages in _column(batch, "raw_prompt"):
        if isinstance(messages, str):
            texts.append(messages)
        else:
            texts.append("\n".join(str(m.get("content", "")) for m in messages))
    return list(zip(pids, texts))


def response_tokens(responses, mask) -> list[np.ndarray]:
    """Per row, the response tokens the model generated (``response_mask`` = 1)."""
    out = []
    for resp, m in zip(responses.unbind(0), mask.unbind(0)):
        resp, m = resp.reshape(-1), m.reshape(-1).bool()
        out.append(resp[: len(m)][m[: len(resp)]].numpy().astype(np.int64))
    return out


def trajectory_rows(keys_by_uid: dict[str, list[str]], partition: str) -> dict:
    """``{uid: [(key, response tokens, reward)]}`` read from TransferQueue, keys in session
    order (``{uid}_{session}_{index}``); the reward is the sum of ``rm_scores`` (verl's
    canonical pre-KL reward, placed on the last response token)."""
    keys = [k for uid in keys_by_uid for k in sorted(keys_by_uid[uid], key=_session_order)]
    out: dict[str, list] = {uid: [] for uid in keys_by_uid}
    if not keys:
        return out
    data = tq.kv_batch_get(keys=keys, partition_id=partition,
                           select_fields=["responses", "response_mask", "rm_scores"])
    tokens = response_tokens(data["responses"], data["response_mask"])
    rewards = [float(r.sum()) for r in data["rm_scores"].unbind(0)]
    for key, tok, reward in zip(keys, tokens, rewards):
        out[key.split("_")[0]].append((key, tok, reward))
    return out


def _session_order(key: str) -> tuple[int, int]:
    _, session, index = key.rsplit("_", 2)
    return int(session), int(index)
