"""The ``hf`` rollout engine: a sampling loop over a ``transformers`` causal LM with a KV cache.

What it guarantees (DESIGN.md §5):

* any number of rollouts per prompt; each prompt is prefilled once and its cache rows are
  replicated for its rollouts;
* a per-token length controller (``lengthctl``) may end any row, which then emits EOS with the
  policy's own log-probability of EOS and finishes as ``stopped`` or ``aborted``;
* finished rows leave the batch and the KV cache at once, so time follows generated tokens;
* every row samples from its own random stream (seeded per row, one uniform per position,
  inverse-CDF sampling), so what a row generates does not depend on which rows share its batch,
  on compaction or on the batch size;
* it returns each sampled token's log-probability under the sampling distribution
  ``softmax(logits / temperature)`` (top-p truncation is not renormalised into the log-prob,
  as in verl's recomputed ``old_log_prob``), and a finish reason per row.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import DynamicCache

from lengthctl.base import RowController


@dataclass
class RowSpec:
    """One rollout to generate."""

    prompt_ids: tuple[int, ...]
    seed: int
    controller: RowController | None = None


@dataclass
class Generation:
    tokens: np.ndarray
    logprobs: np.ndarray
    finish: str
    flags: dict = field(default_factory=dict)


def cache_argument(model) -> str:
    """The keyword a model's ``forward`` takes its KV cache by: ``cache`` from transformers 5.x
    on (``past_key_values`` still works there but warns that it goes in 5.40), ``past_key_values``
    before.  Read from the signature, so it is right for every version and model class."""
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


class HFEngine:
    def __init__(self, model, tokenizer, *, max_new_tokens: int, temperature: float = 1.0,
                 top_p: float = 1.0, max_batch_rows: int = 512, compact_fraction: float = 0.0):
        self.model = model
        self.tokenizer = tokenizer
        self.cache_argument = cache_argument(model)
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.max_batch_rows = int(max_batch_rows)
        # compact once this fraction of the batch has finished (0 = as soon as any row finishes)
        self.compact_fraction = float(compact_fraction)
        self.eos_id = int(tokenizer.eos_token_id)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                          else tokenizer.eos_token_id)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generate(self, rows: list[RowSpec], *, compact: bool = True) -> list[Generation]:
        """Generate every row; ``compact=False`` keeps finished rows in the batch (for tests)."""
        out: list[Generation | None] = [None] * len(rows)
        # rows of one prompt stay together so that the prompt is prefilled once
        order = sorted(range(len(rows)), key=lambda i: (rows[i].prompt_ids, i))
        for start in range(0, len(order), self.max_batch_rows):
            chunk = order[start:start + self.max_batch_rows]
            for i, gen in zip(chunk, self._generate_chunk([rows[i] for i in chunk], compact)):
                out[i] = gen
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------------------------
    def _uniforms(self, rows: list[RowSpec]) -> torch.Tensor:
        u = np.stack([np.random.default_rng(r.seed).random(self.max_new_tokens) for r in rows])
        return torch.from_numpy(u).to(self.device, torch.float64)

    @torch.no_grad()
    def _prefill(self, rows: list[RowSpec]):
        """Prefill each distinct prompt once (left-padded) and replicate its cache per row."""
        prompts = list(dict.fromkeys(r.prompt_ids for r in rows))
        index_of = {p: i for i, p in enumerate(prompts)}
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        cache = DynamicCache()
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                            **{self.cache_argument: cache}, use_cache=True).logits[:, -1, :]
        expand = torch.tensor([index_of[r.prompt_ids] for r in rows], device=self.device)
        cache.batch_select_indices(expand)
        return logits[expand].float(), mask[expand], positions[expand, -1], cache

    def _sample(self, logits: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inverse-CDF sample per row with its own uniform; returns (tokens, log-probs).

        Temperature 0 means greedy decoding (log-probs then at temperature 1)."""
        if self.temperature == 0:
            logp = torch.log_softmax(logits, dim=-1)
            tokens = logits.argmax(dim=-1)
            return tokens, logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        scaled = logits / self.temperature
        logp = torch.log_softmax(scaled, dim=-1)
        probs = logp.exp().double()
        if self.top_p < 1.0:
            sorted_p, sorted_idx = probs.sort(dim=-1, descending=True)
            before = sorted_p.cumsum(-1) - sorted_p
            sorted_p = sorted_p.masked_fill(before >= self.top_p, 0.0)
            cdf = sorted_p.cumsum(-1)
            pick = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1)).clamp(max=cdf.shape[-1] - 1)
            tokens = sorted_idx.gather(-1, pick).squeeze(-1)
        else:
            cdf = probs.cumsum(-1)
            pick = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1)).clamp(max=cdf.shape[-1] - 1)
            tokens = pick.squeeze(-1)
        return tokens, logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)

    @torch.no_grad()
    def _generate_chunk(self, rows: list[RowSpec], compact: bool) -> list[Generation]:
        n = len(rows)
        logits, mask, last_pos, cache = self._prefill(rows)
        uniforms = self._uniforms(rows)
        tokens: list[list[int]] = [[] for _ in range(n)]
        logprobs: list[list[float]] = [[] for _ in range(n)]
        finish: list[str | None] = [None] * n
        active = list(range(n))                      # row index of each batch position
        alive = torch.ones(n, dtype=torch.bool)      # per batch position: still generating
        controllers = [r.controller for r in rows]
        any_controller = any(c is not None for c in controllers)

        for t in range(self.max_new_tokens):
            forced = self._controller_decisions(t, logits, active, alive, controllers, tokens) \
                if any_controller else {}
            step_tokens, step_logp = self._sample(logits, uniforms[active, t])
            if forced:
                pos = torch.tensor(list(forced), device=self.device)
                eos_logp = torch.log_softmax(logits[pos] / (self.temperature or 1.0),
                                             dim=-1)[:, self.eos_id]
                step_tokens[pos] = self.eos_id
                step_logp[pos] = eos_logp
            tok_list, lp_list = step_tokens.tolist(), step_logp.tolist()
            finished_now = []
            for b, row in enumerate(active):
                if not alive[b]:
                    continue
                tokens[row].append(tok_list[b])
                logprobs[row].append(lp_list[b])
                if b in forced:
                    finish[row] = forced[b]
                elif tok_list[b] == self.eos_id:
                    finish[row] = "eos"
                elif t + 1 == self.max_new_tokens:
                    finish[row] = "max_len"
                if finish[row] is not None:
                    alive[b] = False
                    finished_now.append(b)
            if not bool(alive.any()):
                break
            dead = int((~alive).sum())
            if compact and dead and dead > self.compact_fraction * len(active):
                keep = alive.nonzero().squeeze(-1)
                cache.batch_select_indices(keep.to(self.device))
                mask, last_pos = mask[keep.to(mask.device)], last_pos[keep.to(last_pos.device)]
                step_tokens = step_tokens[keep.to(step_tokens.device)]
                active = [active[i] for i in keep.tolist()]
                alive = torch.ones(len(active), dtype=torch.bool)
            last_pos = last_pos + 1
            mask = torch.cat([mask, torch.ones((len(active), 1), dtype=mask.dtype,
                                               device=mask.device)], dim=-1)
            logits = self.model(input_ids=step_tokens.unsqueeze(-1), attention_mask=mask,
                                position_ids=last_pos.unsqueeze(-1),
                                **{self.cache_argument: cache}, use_cache=True).logits[:, -1, :].float()

        return [Generation(np.asarray(tokens[i], dtype=np.int64),
                           np.asarray(logprobs[i], dtype=np.float32), finish[i] or "max_len",
                           dict(controllers[i].flags) if controllers[i] is not None else {})
                for i in range(n)]

    def _controller_decisions(self, t, logits, active, alive, controllers, tokens) -> dict[int, str]:
        """Ask each live row's controller whether to end it here: {batch position: reason}."""
        live = [(b, row) for b, row in enumerate(active)
                if alive[b] and controllers[row] is not None]
        if not live:
            return {}
        want_margin = [b for b, row in live if controllers[row].needs_margin]
        margins = {}
        if want_margin:
            top2 = torch.softmax(logits[want_margin], dim=-1).topk(2, dim=-1).values
            margins = dict(zip(want_margin, (top2[:, 0] - top2[:, 1]).tolist()))
        decisions = {}
        for b, row in live:
            row_tokens = tokens[row]

            def tail(k: int, row_tokens=row_tokens) -> str:
                return self.tokenizer.decode(row_tokens[-k:] if k > 0 else [],
                                             skip_special_tokens=True)

            reason = controllers[row].decide(t, margins.get(b, float("nan")), tail)
            if reason is not None:
                decisions[b] = reason
        return decisions
