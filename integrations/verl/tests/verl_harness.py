"""What the CPU tests put around the plugin: a local Ray, verl's real TransferQueue, verl's
config, a tiny real model behind an HF-``generate`` client, and a boxed-answer reward actor.

Stand-ins, each for something that cannot exist on a CPU machine (named as such):

* :class:`HFGenerateClientNoGPUServer` stands in for verl's vLLM/SGLang server client: the same
  ``async generate(request_id, prompt_ids, sampling_params, ...) -> TokenOutput`` contract, run
  by ``transformers``' ``generate`` on the smoke preset's shipped warm-start (a 0.1M Qwen3).
* :class:`BoxedAnswerReward` stands in for verl's reward-loop worker (same ``compute_score``
  contract): 1.0 when the last ``\\boxed{...}`` of the response equals the ground truth.
* :class:`TrainerStandIn` does what verl's sync trainer does around the plugin (submit a step's
  prompts, ``replay_buffer.sample``, ``_compute_advantage`` -- verl's own method, called
  unbound -- and the end-of-step TransferQueue cleanup), since a trainer needs GPUs to build.
"""
from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import ray
import torch
import transfer_queue as tq
from omegaconf import OmegaConf
from tensordict import NonTensorStack, TensorDict

import verl
from verl.utils import tensordict_utils as tu

REPO = Path(__file__).resolve().parents[3]
SMOKE_WARM_START = REPO / "trainer" / "assets" / "warmstart" / "9df4b9356954e1bd"
VERL_CONFIG = Path(verl.__file__).parent / "trainer" / "config" / "_generated_ppo_trainer.yaml"
RESPONSE_LENGTH = 24


def tiny_model_dir(tmp: Path) -> Path:
    """The smoke warm-start with a chat template that passes the prompt through unchanged."""
    out = tmp / "smoke-policy"
    shutil.copytree(SMOKE_WARM_START, out)
    tok = json.loads((out / "tokenizer_config.json").read_text())
    tok["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (out / "tokenizer_config.json").write_text(json.dumps(tok))
    return out


class HFGenerateClientNoGPUServer:
    """verl's LLM-server client contract on ``transformers.generate`` (module docstring)."""

    def __init__(self, model_dir: str, seed: int = 0) -> None:
        self.model_dir, self.seed, self.model, self.calls = model_dir, seed, None, 0

    async def generate(self, request_id, prompt_ids, sampling_params, **_):
        from transformers import AutoModelForCausalLM
        from verl.workers.rollout.replica import TokenOutput

        if self.model is None:
            torch.set_num_threads(1)
            self.model = AutoModelForCausalLM.from_pretrained(self.model_dir)
        torch.manual_seed(self.seed * 100003 + self.calls)
        self.calls += 1
        ids = torch.tensor([list(prompt_ids)])
        out = self.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                  temperature=float(sampling_params.get("temperature", 1.0)),
                                  top_p=1.0, top_k=0, max_new_tokens=RESPONSE_LENGTH,
                                  pad_token_id=self.model.config.pad_token_id)
        tokens = out[0, ids.shape[1]:].tolist()
        eos = self.model.config.eos_token_id
        if eos in tokens:
            tokens = tokens[: tokens.index(eos) + 1]
        return TokenOutput(token_ids=tokens, log_probs=[0.0] * len(tokens),
                           stop_reason="completed")


@ray.remote(num_cpus=0)
class BoxedAnswerReward:
    """verl's reward-worker contract: exact match of the last ``\\boxed{}`` (module docstring)."""

    def __init__(self, model_dir: str) -> None:
        from transformers import AutoTokenizer
        self.tok = AutoTokenizer.from_pretrained(model_dir)

    def compute_score(self, data):
        text = self.tok.decode(data.batch["responses"][0].tolist(), skip_special_tokens=True)
        found = re.findall(r"\\boxed\{([^}]*)\}", text)
        truth = str(data.non_tensor_batch["reward_model"][0]["ground_truth"])
        return {"reward_score": float(bool(found) and found[-1].strip() == truth),
                "reward_extra_info": {}}


def chain_sum_prompts(count: int, seed: int) -> list[tuple[int, str, str]]:
    """(index, prompt, answer): chain sums of two or three one-digit terms, the smoke task's
    prompt format (``trainer.tasks``: ``"{expression} =\\n"``)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        terms = rng.integers(1, 10, size=int(rng.integers(2, 4))).tolist()
        out.append((i, " + ".join(map(str, terms)) + " =\n", str(sum(terms))))
    return out


def verl_config(model_dir: Path, train_batch_size: int, sampler_kwargs: dict):
    """verl's generated PPO config with the plugin's settings (README's example, scaled down)."""
    cfg = OmegaConf.load(VERL_CONFIG)
    over = OmegaConf.create({
        "data": {"train_batch_size": train_batch_size, "gen_batch_size": 1,
                 "max_prompt_length": 32, "max_response_length": RESPONSE_LENGTH},
        "actor_rollout_ref": {"model": {"path": str(model_dir)},
                              "rollout": {"name": "vllm", "n": 1, "temperature": 1.0,
                                          "agent": {"num_workers": 1, "agent_loop_manager_class":
                                                    "allocbench_verl.manager."
                                                    "AllocBenchAgentLoopManager"}}},
        "algorithm": {"adv_estimator": "allocbench", "use_kl_in_reward": False},
        "trainer": {"v1": {"trainer_mode": "sync",
                           "sampler": {"custom_sampler": {"path": "pkg://allocbench_verl.sampler",
                                                          "name": "AllocBenchReplayBuffer"},
                                       "sampler_kwargs": sampler_kwargs}}},
    })
    return OmegaConf.merge(cfg, over)


class TrainerStandIn:
    """verl's sync trainer's part around the plugin (module docstring)."""

    def __init__(self, cfg, prompts, manager, buffer_cls) -> None:
        self.cfg, self.prompts, self.manager, self.cursor = cfg, prompts, manager, 0
        self.global_steps = 0
        sampler = cfg.trainer.v1.sampler
        # the constructor contract verl's _build_replay_buffer uses for a custom sampler
        self.buffer = buffer_cls(trainer_mode="sync", trainer_config=cfg.trainer.v1.get("sync", {}),
                                 max_off_policy_threshold=None, max_off_policy_strategy="drop",
                                 sampler_kwargs=sampler.sampler_kwargs, refill_fn=self.submit)

    def submit(self, k: int) -> int:
        """verl's ``_add_prompts_to_generate``: the next ``k`` dataset rows, registered pending."""
        rows = [self.prompts[(self.cursor + i) % len(self.prompts)] for i in range(k)]
        self.cursor += k
        uids = [str(uuid.uuid4()) for _ in rows]
        batch = TensorDict({
            "raw_prompt": NonTensorStack(*[[{"role": "user", "content": p}] for _, p, _ in rows]),
            "uid": NonTensorStack(*uids),
            "index": torch.tensor([i for i, _, _ in rows]),
            "data_source": NonTensorStack(*["chain_sum"] * k),
            "reward_model": NonTensorStack(*[{"ground_truth": a, "style": "rule"}
                                             for _, _, a in rows]),
        }, batch_size=k)
        tu.assign_non_tensor_data(batch, "global_steps", self.global_steps)
        tq.kv_batch_put(keys=uids, partition_id="train",
                        tags=[{"is_prompt": True, "status": "pending",
                               "global_steps": self.global_steps}
                              for _ in uids])
        self.manager.generate_sequences(batch)
        return k

    def step(self, step: int) -> dict:
        """One training step up to the advantages; {key: advantage} of the trained rows."""
        from verl.trainer.ppo.v1.trainer_base import PPOTrainer

        self.global_steps = step
        self.submit(int(self.cfg.data.train_batch_size))           # prepare_step
        meta, metrics = self.buffer.sample(global_steps=step, partition_id="train",
                                           batch_size=int(self.cfg.data.train_batch_size))
        # the actor's old-log-prob recompute needs the GPU actor: its stand-in copies the
        # rollout's log-probs (what verl's bypass mode uses)
        old = tq.kv_batch_get(keys=meta.keys, partition_id="train",
                              select_fields=["rollout_log_probs"])["rollout_log_probs"]
        tq.kv_batch_put(keys=meta.keys, partition_id="train",
                        fields=TensorDict({"old_log_probs": old}, batch_size=len(meta.keys)))
        PPOTrainer._compute_advantage(SimpleNamespace(config=self.cfg), meta, metrics)
        data = tq.kv_batch_get(keys=meta.keys, partition_id="train",
                               select_fields=["advantages", "response_mask", "uid"])
        adv = {}
        for key, a, m in zip(meta.keys, data["advantages"].unbind(0),
                             data["response_mask"].unbind(0)):
            vals = a.reshape(-1)[m.reshape(-1).bool()]
            # one advantage per row, broadcast over its response tokens
            assert torch.allclose(vals, vals[0].expand_as(vals)), key
            adv[key] = float(vals[0]) if len(vals) else 0.0
        tq.kv_clear(keys=meta.keys, partition_id="train")            # the trainer's step cleanup
        return {"advantages": adv, "metrics": metrics}
