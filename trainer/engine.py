"""The ``hf`` rollout engine: a sampling loop over a ``transformers`` causal LM with a KV cache.

What it guarantees (docs/DESIGN.md §Engines):

* any number of rollouts per prompt; each prompt is prefilled once and its cache rows are
  replicated for its rollouts;
* a length controller (``lengthctl``) may end any row, which then emits EOS with the policy's
  own log-probability of EOS and finishes as ``stopped`` or ``aborted``; it is asked once per
  check position for all live rows of a rule at once (:class:`lengthctl.base.RowBatch`: arrays
  of rows, positions and token ids in, one decision per row out), and only at the positions it
  checks, with the margin computed, and the sampled tokens' log-probs so far copied, only for
  the rows it asks about; a rule with ``needs_hidden`` also gets the policy's last-layer hidden
  state of each live row at its ``next_position()`` (one forward pass with
  ``output_hidden_states``; ARRoL's quality head reads these);
* finished rows leave the batch and the KV cache once they are more than ``compact_fraction``
  of it, so time follows generated tokens;
* every row samples from its own random stream (seeded per row, one uniform per position,
  inverse-CDF sampling), so what a row generates does not depend on which rows share its batch,
  on compaction or on the batch size;
* it returns each sampled token's log-probability under the sampling distribution
  ``softmax(logits / temperature)`` (top-p truncation is not renormalised into the log-prob,
  as in verl's recomputed ``old_log_prob``), and a finish reason per row.
"""
from __future__ import annotations

import contextlib
import inspect
import time

from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from lengthctl.base import REASONS, RowBatch, RowController, TokenText


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
    weight: float = 1.0           # the length controller's multiplier on the row's weight
    fields: dict = field(default_factory=dict)   # typed Rollout fields the stop rule set


# finish codes of the bookkeeping arrays; 0 means still generating
_FINISH = {1: "eos", 2: "max_len", 3: REASONS[1], 4: REASONS[2]}
_EOS, _MAX_LEN, _RULE = 1, 2, 2          # a rule's code c finishes as _RULE + c


class _PreallocatedLayer(DynamicLayer):
    """A KV-cache layer that writes each step into a buffer sized for the whole generation.

    ``DynamicLayer`` concatenates the cache with every new token (a copy of the whole cache per
    step and layer); here a step writes one slot and the attention reads a view of the filled
    part.  Compaction copies only the filled part of the kept rows."""

    def __init__(self, extra: int) -> None:
        super().__init__()
        self.extra = extra
        self.length = 0

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            b, h, t, d = key_states.shape
            self._k = key_states.new_empty((b, h, t + self.extra, d))
            self._v = value_states.new_empty((b, h, t + self.extra, d))
        n = key_states.shape[-2]
        self._k[:, :, self.length:self.length + n].copy_(key_states)
        self._v[:, :, self.length:self.length + n].copy_(value_states)
        self.length += n
        self.keys = self._k[:, :, :self.length]
        self.values = self._v[:, :, :self.length]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.length == 0:
            return
        for name in ("_k", "_v"):
            old = getattr(self, name)
            new = old.new_empty((len(indices),) + old.shape[1:])
            new[:, :, :self.length].copy_(old[:, :, :self.length].index_select(0, indices))
            setattr(self, name, new)
        self.keys = self._k[:, :, :self.length]
        self.values = self._v[:, :, :self.length]


class _PreallocatedCache(DynamicCache):
    def __init__(self, extra: int) -> None:
        super().__init__()
        self.layer_class_to_replicate = lambda: _PreallocatedLayer(extra)


def cache_argument(model) -> str:
    """The keyword a model's ``forward`` takes its KV cache by: ``cache`` from transformers 5.x
    on (``past_key_values`` still works there but warns that it goes in 5.40), ``past_key_values``
    before.  Read from the signature, so it is right for every version and model class."""
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def token_text(tokenizer, model) -> TokenText:
    """Each token id's text (ids past the tokenizer, up to the model's vocabulary, are empty)
    and the decoder, as every engine hands them to stop rules."""
    size = max(len(tokenizer), int(getattr(model.config, "vocab_size", 0) or 0))
    pieces = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=True)
    pieces += [""] * (size - len(pieces))

    def decode(ids):
        return tokenizer.decode(ids, skip_special_tokens=True)
    return TokenText(pieces, _joining_decoder(tokenizer, pieces) or decode)


def _joining_decoder(tokenizer, pieces):
    """Joining the ids' own texts, when that is what the tokenizer's decode does, else None.

    A stop rule decodes a scan window for every row whose window may hold a marker, and
    ``tokenizer.decode`` costs ~50 us a call in Python (on the embedded default the join cut
    DUET's marker scan from 10.9 to 7.5 ms of its ~36 ms a generation).  A ``Fuse`` decoder
    (the embedded character-level tokenizer's) concatenates the tokens' texts, special tokens
    skipped, which is a join over ``pieces``; any other decoder (byte-level BPE merges bytes
    across tokens, SentencePiece strips spaces) keeps ``tokenizer.decode``.  A check on every id
    at once guards the claim."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    if decoder is None or type(decoder).__name__ != "Fuse" \
            or getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return None                     # clean-up rewrites " ." and the like across tokens
    every = list(range(len(tokenizer)))
    if tokenizer.decode(every, skip_special_tokens=True) != "".join(pieces[i] for i in every):
        return None

    def join(ids):
        return "".join(map(pieces.__getitem__, ids))
    return join


class Engine:
    """What the loop asks of a rollout engine; :class:`HFEngine` and
    ``trainer.vllm_engine.VLLMEngine`` implement it.

    ``generate(rows)`` returns one :class:`Generation` per :class:`RowSpec`, in order;
    ``pad_id`` pads packed batches; ``text`` is the vocabulary for stop rules.  An engine that
    holds its own copy of the weights or its own memory overrides :meth:`sync_weights` (after
    each update and on resume), :meth:`sleep` (before the update) and :meth:`close` (at the end);
    the defaults do nothing, as for the hf engine that samples from the trainer's model.  The
    loop sets ``phase`` to its ledger's phase timer, so work an engine does on the trainer's
    behalf (vLLM's log-prob recompute) is charged to its phase."""

    pad_id: int

    def __init__(self, model, tokenizer) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.eos_id = int(tokenizer.eos_token_id)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                          else tokenizer.eos_token_id)
        self._text: TokenText | None = None
        self.phase = lambda name: contextlib.nullcontext()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def text(self) -> TokenText:
        """Each token id's text, for stop rules (built on first use)."""
        if self._text is None:
            self._text = token_text(self.tokenizer, self.model)
        return self._text

    def generate(self, rows: list[RowSpec]) -> list[Generation]:
        raise NotImplementedError

    def sync_weights(self, model=None) -> None:
        """Push the trainer's weights to the engine's own copy (none here)."""

    def sleep(self) -> None:
        """Free the engine's own memory while the trainer updates (none here)."""

    def close(self) -> None:
        """Release the engine's resources at the end of a run (none here)."""


class HFEngine(Engine):
    def __init__(self, model, tokenizer, *, max_new_tokens: int, temperature: float = 1.0,
                 top_p: float = 1.0, max_batch_rows: int = 512, compact_fraction: float = 0.1):
        super().__init__(model, tokenizer)
        self.cache_argument = cache_argument(model)
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.max_batch_rows = int(max_batch_rows)
        # compact once more than this fraction of the batch has finished (0 = as soon as any row
        # finishes): a compaction copies the cache, a finished row left in costs its forward share
        self.compact_fraction = float(compact_fraction)
        # seconds spent asking stop rules (margins included), summed over every generate call:
        # what bench.engine reports as the controller's cost, timed inside the same runs, since
        # two runs' totals on a shared VM differ by more than the cost itself.  Process CPU
        # seconds on CPU; wall on an accelerator (the margins' copy to host synchronises).
        self.rule_seconds = 0.0

    def generate(self, rows: list[RowSpec], *, compact: bool = True) -> list[Generation]:
        """Generate every row; ``compact=False`` keeps finished rows in the batch (for tests)."""
        out: list[Generation | None] = [None] * len(rows)
        for chunk in self._chunks(rows):
            for i, gen in zip(chunk, self._generate_chunk([rows[i] for i in chunk], compact)):
                out[i] = gen
        return out  # type: ignore[return-value]

    def _chunks(self, rows: list[RowSpec]) -> list[list[int]]:
        """Row indices in chunks of at most ``max_batch_rows``.  Rows of one prompt stay
        together, so that the prompt is prefilled once and a rule that decides per group
        (ARRoL's) sees the whole group; a prompt with more rows than a chunk holds is split.
        What a row generates never depends on its chunk (its own random stream)."""
        order = sorted(range(len(rows)), key=lambda i: (rows[i].prompt_ids, i))
        chunks: list[list[int]] = []
        current: list[int] = []
        start = 0
        while start < len(order):
            end = start
            while end < len(order) and rows[order[end]].prompt_ids == rows[order[start]].prompt_ids:
                end += 1
            run = order[start:end]
            if current and len(current) + len(run) > self.max_batch_rows:
                chunks.append(current)
                current = []
            while len(run) > self.max_batch_rows:
                chunks.append(run[:self.max_batch_rows])
                run = run[self.max_batch_rows:]
            current += run
            start = end
        if current:
            chunks.append(current)
        return chunks

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
        cache = _PreallocatedCache(self.max_new_tokens)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                            **{self.cache_argument: cache}, use_cache=True).logits[:, -1, :]
        expand = torch.tensor([index_of[r.prompt_ids] for r in rows], device=self.device)
        cache.batch_select_indices(expand)
        # the mask is preallocated too: a step fills one column instead of concatenating one
        full = torch.ones((len(rows), width + self.max_new_tokens), dtype=torch.long,
                          device=self.device)
        full[:, :width] = mask[expand]
        return logits[expand].float(), full, width, positions[expand, -1], cache

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

    def _rule_batches(self, rows: list[RowSpec]) -> list[tuple[RowBatch, np.ndarray]]:
        """One batch per stop rule among the rows, with the chunk rows it decides."""
        groups: dict = {}
        for i, r in enumerate(rows):
            if r.controller is not None:
                groups.setdefault(r.controller.batch_key(), []).append(i)
        batches = []
        for members in groups.values():
            controllers = [rows[i].controller for i in members]
            batches.append((type(controllers[0]).batch(controllers, self.text),
                            np.asarray(members, dtype=np.int64)))
        return batches

    @torch.no_grad()
    def _generate_chunk(self, rows: list[RowSpec], compact: bool) -> list[Generation]:
        n, limit = len(rows), self.max_new_tokens
        logits, mask, width, last_pos, cache = self._prefill(rows)
        hidden = None                                   # last-layer states, when a rule asks
        uniforms = self._uniforms(rows)
        # bookkeeping in numpy: one device-to-host copy of the step's tokens, no per-row Python
        history = np.full((n, limit), self.pad_id, dtype=np.int64)
        logprobs = np.zeros((n, limit), dtype=np.float32)
        finish = np.zeros(n, dtype=np.int8)
        lengths = np.zeros(n, dtype=np.int64)
        batches = self._rule_batches(rows)
        batch_of = np.full(n, -1, dtype=np.int64)       # chunk row -> its rule batch
        local = np.zeros(n, dtype=np.int64)             # chunk row -> index in that batch
        for b, (_, members) in enumerate(batches):
            batch_of[members] = b
            local[members] = np.arange(len(members))
        active = np.arange(n)                           # chunk row of each batch position
        active_dev = torch.arange(n, device=self.device)
        alive = np.ones(n, dtype=bool)                  # per batch position
        # with sdpa the decode steps' mask is handed over ready (transformers builds it anew at
        # every step from a 2-d mask, ~15% of a step of the embedded policy): a 4-d boolean view
        # as sdpa takes it, and none while no row is padded, which is what transformers derives
        # itself, so the logits are bitwise the same.  Other attention keeps the 2-d mask (eager
        # would add a boolean mask as numbers).
        sdpa = getattr(self.model.config, "_attn_implementation", None) == "sdpa"
        if sdpa:
            mask = mask.bool()[:, None, None, :]
        padded = bool((mask[..., :width] == 0).any())
        rule_clock = time.process_time if self.device.type == "cpu" else time.perf_counter

        for t in range(limit):
            if batches:
                started = rule_clock()
                forced = self._decisions(t, batches, batch_of, local, active, alive, logits,
                                         history, logprobs, hidden)
                self.rule_seconds += rule_clock() - started
            else:
                forced = None
            step_tokens, step_logp = self._sample(logits, uniforms[active_dev, t])
            if forced is not None and forced.any():
                pos = torch.from_numpy(np.flatnonzero(forced)).to(self.device)
                eos_logp = torch.log_softmax(logits[pos] / (self.temperature or 1.0),
                                             dim=-1)[:, self.eos_id]
                step_tokens[pos] = self.eos_id
                step_logp[pos] = eos_logp.to(step_logp.dtype)
            tok = step_tokens.cpu().numpy()
            live = np.flatnonzero(alive)
            row = active[live]
            history[row, t] = tok[live]
            lengths[row] = t + 1
            logprobs[row, t] = step_logp.float().cpu().numpy()[live]
            code = np.where(tok[live] == self.eos_id, _EOS, 0).astype(np.int8)
            if t + 1 == limit:
                code[code == 0] = _MAX_LEN
            if forced is not None:
                ruled = forced[live] > 0
                code[ruled] = _RULE + forced[live][ruled]
            finish[row] = code
            alive[live] = code == 0
            if not alive.any():
                break
            dead = len(alive) - int(alive.sum())
            if compact and dead > self.compact_fraction * len(alive):
                keep = np.flatnonzero(alive)
                keep_dev = torch.from_numpy(keep).to(self.device)
                cache.batch_select_indices(keep_dev)
                mask, last_pos = mask[keep_dev], last_pos[keep_dev]
                padded = padded and bool((mask[..., :width] == 0).any())
                step_tokens = step_tokens[keep_dev]
                active, active_dev = active[keep], active_dev[keep_dev]
                alive = np.ones(len(active), dtype=bool)
            last_pos = last_pos + 1
            # a rule deciding at t + 1 from hidden states gets the last layer's state of this
            # forward pass (the one that makes position t + 1's logits); asked for only then
            want_hidden = any(b.needs_hidden and b.next_position() == t + 1 for b, _ in batches)
            step_mask = mask[..., :width + t + 1] if padded or not sdpa else None
            output = self.model(input_ids=step_tokens.unsqueeze(-1), attention_mask=step_mask,
                                position_ids=last_pos.unsqueeze(-1),
                                **{self.cache_argument: cache}, use_cache=True,
                                **({"output_hidden_states": True} if want_hidden else {}))
            logits = output.logits[:, -1, :].float()
            hidden = output.hidden_states[-1][:, -1, :].float() if want_hidden else None

        out = []
        for i in range(n):
            batch = batches[batch_of[i]][0] if batch_of[i] >= 0 else None
            flags = batch.flags(int(local[i])) if batch is not None else {}
            weight = batch.weight(int(local[i])) if batch is not None else 1.0
            fields = batch.row_fields(int(local[i])) if batch is not None else {}
            out.append(Generation(history[i, :lengths[i]].copy(), logprobs[i, :lengths[i]].copy(),
                                  _FINISH[int(finish[i])], flags, weight, fields))
        return out

    def _decisions(self, t, batches, batch_of, local, active, alive, logits, history, logprobs,
                   hidden=None):
        """Each rule batch's codes for its live rows at position ``t``, per batch position."""
        forced = None
        live = np.flatnonzero(alive)
        owner = batch_of[active[live]]
        for b, (batch, _) in enumerate(batches):
            if t < batch.next_position():
                continue
            sel = live[owner == b]                      # batch positions of this rule's rows
            if not len(sel):
                continue
            chunk_rows = active[sel]

            def margins(k, sel=sel):
                index = torch.from_numpy(sel[np.asarray(k, dtype=np.int64)]).to(logits.device)
                top2 = torch.softmax(logits.index_select(0, index), dim=-1).topk(2, dim=-1).values
                return (top2[:, 0] - top2[:, 1]).double().cpu().numpy()

            def sampled_logprobs(k, chunk_rows=chunk_rows, t=t):
                return logprobs[chunk_rows[np.asarray(k, dtype=np.int64)], :t]

            def hidden_states(k, sel=sel):
                index = torch.from_numpy(sel[np.asarray(k, dtype=np.int64)]).to(hidden.device)
                return hidden.index_select(0, index).double().cpu().numpy()

            # only a batch that asks for hidden states takes the keyword
            extra = {"hidden": hidden_states if hidden is not None else None} \
                if batch.needs_hidden else {}
            codes = batch.decide(local[chunk_rows], np.full(len(sel), t, dtype=np.int64),
                                 history[chunk_rows, :t], margins, logprobs=sampled_logprobs,
                                 **extra)
            if codes.any():
                if forced is None:
                    forced = np.zeros(len(active), dtype=np.int8)
                forced[sel] = codes
        return forced
