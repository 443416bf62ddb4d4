"""GRPO advantages and the clipped policy-gradient loss over flat, variable-size groups.

Advantages (docs/ALGORITHMS.md §GRPO): within each training group, ``(r - mean) / (std + eps)`` with
the unbiased std as in verl (``normalize_std=False`` gives Dr. GRPO's ``r - mean``).  Every row of
the group, aborted ones included, enters the mean and std with its reward as scored (docs/ALGORITHMS.md §DUET
step 14).  The rule for too-small groups lives here and nowhere else, chosen per method through
:meth:`allocators.base.Allocator.advantage_options` (docs/DESIGN.md §Loop):

* ``small_groups="no_gradient"`` (every method's default): a group with fewer than two kept
  (non-aborted) rows gives no gradient — every advantage 0 — and is counted in ``no_gradient``.
* ``small_groups="verl"`` (DUET's default, its released behaviour: verl's
  ``compute_grpo_outcome_advantage``): a group of one row has mean 0 and std 1, so its advantage
  is ``r / (1 + eps)`` (``r`` without std normalisation), a baseline-free signal; groups of two or
  more rows are normalised over all their rows even when only one is kept.  Only groups with no
  kept row count as ``no_gradient``; a one-row group scored 0 counts as ``zero_variance`` (its
  reward equals its baseline).

``clip`` (``None`` = off) clamps the group-normalised advantages to ``[-clip, clip]`` before the
rows' weights apply: Knapsack-RL's recipe ``algorithm.adv_clip_value = 5`` (see its module).

A method may give a group a larger reward sample for its mean and std than the rows it trains
(``Rollout.baseline_rewards`` on the group's first kept row: Reinforce-Ada's global
statistics over every row its prompt drew); the rows' own rewards are centred on that mean.

Loss: PPO clipped surrogate with separate low/high clip ranges and optional dual clip, token-mean
over every kept response token of the batch, plus an optional k3 ("low_var_kl") KL penalty to a
frozen reference policy.  ``ratio = pi_theta / pi_old`` uses the log-probs stored with each row by
the engine that sampled it, so a row sampled in an earlier step gets a clipped importance ratio to
the policy that actually sampled it -- unless its method marks it
(``Rollout.recompute_logprobs``): the loop then replaces its stored log-probs by the
current policy's (:func:`recompute_old_logprobs`, verl's ``compute_log_prob`` before the update),
so with one update per step its ratio starts at exactly 1 (Pilot-Commit's stale pilots, as
released).  Each row's advantage is multiplied by its weight (DUET's inverse propensities);
aborted rows are masked out entirely.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.rows import Rollout
from trainer import fastlm


SMALL_GROUP_RULES = ("no_gradient", "verl")


@dataclass
class AdvantageReport:
    groups: int = 0
    no_gradient: int = 0          # groups the size rule gives no gradient (module docstring)
    zero_variance: int = 0        # other groups whose rewards all equal their baseline
    rows_with_signal: int = 0
    clipped: int = 0              # kept rows whose advantage the clip changed


def assign_advantages(groups: list[list[Rollout]], *, normalize_std: bool = True,
                      eps: float = 1e-6, small_groups: str = "no_gradient",
                      clip: float | None = None) -> AdvantageReport:
    if small_groups not in SMALL_GROUP_RULES:
        raise ValueError(f"small_groups must be one of {SMALL_GROUP_RULES}, got {small_groups!r}")
    if clip is not None and not clip > 0:
        raise ValueError(f"advantage clip must be positive (or None), got {clip}")
    report = AdvantageReport(groups=len(groups))
    for group in groups:
        kept_rows = [r for r in group if r.kept]
        if not kept_rows or (len(kept_rows) < 2 and small_groups == "no_gradient"):
            report.no_gradient += 1
            for r in group:
                r.advantage = 0.0
            continue
        rewards = np.array([r.reward for r in group], dtype=np.float64)
        pool = kept_rows[0].baseline_rewards
        sample = rewards if pool is None else np.asarray(pool, dtype=np.float64)
        if len(sample) == 1:      # only reachable under "verl": mean 0, std 1
            centred, scale = rewards, (1.0 + eps) if normalize_std else 1.0
        else:
            centred = rewards - sample.mean()
            scale = (sample.std(ddof=1) + eps) if normalize_std else 1.0
        if np.allclose(centred, 0.0):
            report.zero_variance += 1
        advantages = centred / scale
        if clip is not None:
            clipped = np.clip(advantages, -clip, clip)
            report.clipped += int(sum(r.kept and c != a
                                      for r, a, c in zip(group, advantages, clipped)))
            advantages = clipped
        for r, a in zip(group, advantages):
            r.advantage = float(a) if r.kept else 0.0
            report.rows_with_signal += int(r.kept and a != 0.0)
    return report


@dataclass(frozen=True)
class LossConfig:
    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip: float = 3.0        # verl clip_c; <= 1 disables
    kl_coef: float = 0.0
    temperature: float = 1.0


def _pack(rows: list[Rollout], prompts: dict[int, tuple[int, ...]], pad_id: int, device):
    """Right-padded prompt+response ids and, per row, where its response log-probs sit."""
    seqs = [list(prompts[r.pid]) + r.tokens.tolist() for r in rows]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    resp_mask = torch.zeros((len(rows), width - 1), dtype=torch.float32)
    targets = torch.zeros((len(rows), width - 1), dtype=torch.long)
    old = torch.zeros((len(rows), width - 1), dtype=torch.float32)
    for i, (r, s) in enumerate(zip(rows, seqs)):
        ids[i, :len(s)] = torch.tensor(s)
        attn[i, :len(s)] = 1
        p = len(prompts[r.pid])
        n = r.n_tokens
        resp_mask[i, p - 1:p - 1 + n] = 1.0
        targets[i, p - 1:p - 1 + n] = torch.from_numpy(r.tokens)
        old[i, p - 1:p - 1 + n] = torch.from_numpy(r.logprobs.astype(np.float32))
    return ids.to(device), attn.to(device), resp_mask.to(device), targets.to(device), old.to(device)


def token_logprobs(model, ids, attn, targets, temperature: float) -> torch.Tensor:
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1, :].float() / temperature
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def _batch(model, rows, prompts, pad_id, temperature, ref_model=None):
    """(log-probs, old log-probs, per-token advantage, mask, reference log-probs or None), in
    one of two layouts the loss treats alike (it only multiplies and sums them): flat over the
    response tokens, row after row, through :mod:`trainer.fastlm` where it applies (each
    prompt run once for its rows), else transformers' forward over right-padded prompt +
    response rows (:func:`_pack`)."""
    fast = fastlm.for_model(model)
    ref_fast = fastlm.for_model(ref_model) if ref_model is not None else None
    adv = [r.advantage * r.weight for r in rows]
    # both through one layout: a reference the lean forward does not cover (e.g. a bf16 copy
    # beside float32 master weights) sends the policy through transformers' forward too
    if fast is None or (ref_model is not None and ref_fast is None):
        device = next(model.parameters()).device
        ids, attn, mask, targets, old = _pack(rows, prompts, pad_id, device)
        logp = token_logprobs(model, ids, attn, targets, temperature)
        ref = None
        if ref_model is not None:
            with torch.no_grad():
                ref = token_logprobs(ref_model, ids, attn, targets, temperature)
        return logp, old, torch.tensor(adv, dtype=torch.float32, device=device).unsqueeze(-1), \
            mask, ref
    args = ([prompts[r.pid] for r in rows], [r.tokens for r in rows], temperature)
    logp = fast.response_logprobs(*args)
    ref = None
    if ref_model is not None:
        with torch.no_grad():
            ref = ref_fast.response_logprobs(*args)
    counts = torch.tensor([r.n_tokens for r in rows])
    old = torch.from_numpy(np.concatenate([r.logprobs for r in rows]).astype(np.float32))
    return logp, old, torch.tensor(adv, dtype=torch.float32).repeat_interleave(counts), \
        torch.ones_like(old), ref


@torch.no_grad()
def recompute_old_logprobs(model, rows: list[Rollout], prompts: dict[int, tuple[int, ...]],
                           pad_id: int, temperature: float, micro_batch_rows: int) -> None:
    """Replace each row's stored ``logprobs`` by the current policy's, in place."""
    for start in range(0, len(rows), micro_batch_rows):
        micro = rows[start:start + micro_batch_rows]
        logp, _, _, mask, _ = _batch(model, micro, prompts, pad_id, temperature)
        # either layout: the masked positions in row-major order are each row's tokens in turn
        flat = logp[mask > 0].float().cpu().numpy()
        ends = np.cumsum([r.n_tokens for r in micro])[:-1]
        for r, piece in zip(micro, np.split(flat, ends)):
            r.logprobs = piece.astype(np.float32)


def policy_loss(model, rows: list[Rollout], prompts: dict[int, tuple[int, ...]], pad_id: int,
                denominator_tokens: int, cfg: LossConfig, ref_model=None) -> tuple[torch.Tensor, dict]:
    """Sum of per-token clipped surrogate (+KL) over ``rows`` divided by ``denominator_tokens``.

    ``rows`` may be a subset of the kept rows (those with a non-zero advantage when KL is off);
    ``denominator_tokens`` is the token count of every kept row of the mini-batch, so the result
    equals verl's token-mean over the whole mini-batch.
    """
    device = next(model.parameters()).device
    logp, old, adv, mask, ref = _batch(model, rows, prompts, pad_id, cfg.temperature,
                                       ref_model if cfg.kl_coef > 0 else None)
    ratio = torch.exp((logp - old).clamp(-20.0, 20.0))
    pg = torch.maximum(-ratio * adv, -ratio.clamp(1 - cfg.clip_low, 1 + cfg.clip_high) * adv)
    if cfg.dual_clip > 1.0:
        pg = torch.where(adv < 0, torch.minimum(pg, -cfg.dual_clip * adv), pg)
    per_token = pg
    kl_mean = torch.zeros((), device=device)
    if ref is not None:
        log_ratio = (ref - logp).clamp(-20.0, 20.0)
        kl = (torch.exp(log_ratio) - log_ratio - 1).clamp(-10.0, 10.0)
        per_token = per_token + cfg.kl_coef * kl
        kl_mean = (kl * mask).sum() / mask.sum().clamp(min=1)
    loss = (per_token * mask).sum() / max(1, denominator_tokens)
    clipped = ((ratio - 1).abs() > cfg.clip_low) & (mask > 0)
    stats = {"kl": float(kl_mean.detach()),
             "clip_fraction": float(clipped.sum() / mask.sum().clamp(min=1))}
    return loss, stats
