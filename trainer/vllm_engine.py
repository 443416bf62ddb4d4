"""The ``vllm`` rollout engine (extra ``gpu``): the ``HFEngine`` contract on a colocated vLLM.

``VLLMEngine.generate(rows: list[RowSpec]) -> list[Generation]`` returns what the hf engine
returns: one generation per row, the sampled tokens (EOS included when sampled or forced), their
old log-probabilities, a finish reason in ``eos | max_len | stopped | aborted`` and the row
controller's flags.  vLLM is imported lazily; choosing engine ``vllm`` without it installed is a
one-line error (:func:`check_vllm`).

How each part maps onto vLLM (APIs checked against the current documentation and source):

* **Per-row sampling.**  Each row is its own request with its own ``SamplingParams(n=1,
  max_tokens, temperature, top_p, seed=row.seed)``, so rows keep the per-row random streams of
  the hf engine's contract; rows of one prompt share its KV blocks through vLLM's prefix cache.
  ``generation_config="vllm"`` keeps the model's ``generation_config.json`` from adding its own
  stop tokens or sampling defaults: a row ends at the tokenizer's EOS, as in the hf engine.
* **Old log-probs.**  ``old_logprobs="recompute"`` (default) recomputes them with the trainer's
  model after generation, exactly as the hf engine defines them (``log_softmax(logits / T)``, no
  top-p renormalisation) -- docs/DESIGN.md §Loop takes the engine's values only when they are exact, and
  vLLM's bf16 kernels and its top-p-renormalised ``processed_logprobs`` are not (verl recomputes
  ``old_log_prob`` with the actor for the same reason).  ``old_logprobs="engine"`` takes vLLM's
  own: ``SamplingParams(logprobs=0)`` returns the sampled token's log-prob, and
  ``LLM(logprobs_mode="processed_logprobs")`` makes it the log-prob after temperature and top-p
  (docs.vllm.ai, "Sampling Parameters" / ``logprobs_mode``).
* **The stop rule (DUET's marker-gated abort / confidence stop, ``lengthctl``).**  vLLM V1
  dropped per-request ``SamplingParams.logits_processors`` ("Parameters that will not be
  supported in V1: ... logits_processors", vllm-project/vllm#13058; the field itself was removed
  in #34400).  Custom logits processors are now classes registered when the engine is built,
  ``LLM(logits_processors=[cls])``, that see the whole batch every step and learn per-request
  options from ``SamplingParams.extra_args`` (docs.vllm.ai/en/stable/features/custom_logitsprocs).
  Two class interfaces exist and both are implemented here:

  - the V1 model runner's ``vllm.v1.sample.logits_processor.LogitsProcessor``:
    ``update_state(BatchUpdate)`` (added / removed / moved slots; an added request carries a live
    reference to its output token list) and ``apply(logits)``;
  - Model Runner V2's ``vllm.v1.worker.gpu.sample.logits_processor.LogitsProcessor``
    (vllm-project/vllm#56497; docs.vllm.ai/en/v0.32.0/features/custom_logitsprocs, which notes
    the legacy runner is selected with ``VLLM_USE_V2_MODEL_RUNNER=0``):
    ``add_request(req_idx, sampling_params) -> bool`` and ``apply(logits, ctx: LogitsContext)``,
    where ``ctx.expanded_idx_mapping`` maps logits rows to request slots, ``ctx.pos`` is each
    row's position and ``ctx.input_ids`` the token fed there (the row's last sampled token).

  :func:`processor_class` picks the one matching the runner vLLM will use
  (``vllm.envs.VLLM_USE_V2_MODEL_RUNNER``).  The processor asks each rule once per engine step
  through the batched interface of ``lengthctl.base`` (the hf engine's): the rows of a
  ``generate`` call are grouped by ``batch_key`` into one :class:`RowBatch` per rule, and each
  step hands it the arrays of its rows that reached a new position (positions may differ across
  rows of one vLLM step), their generated ids (a history array filled one new token at a time)
  and a margin callback (top-1 minus top-2 probability of the raw logits, which is what ``apply``
  receives in both interfaces: it runs before temperature and top-p), computed only for the rows
  the rule asks about; DUET's rule thus runs as the same array code on both engines.  When the
  rule answers ``stopped`` / ``aborted`` for a row the processor forces EOS (every
  other logit to ``-inf``), records the reason and the policy's own log-prob of EOS at the
  sampling temperature in the row's state, and the engine reports that reason as the row's
  finish.  Controllers are Python objects and ``extra_args`` is deep-copied, so requests carry
  only a key into this module's registry: vLLM must run in this process
  (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, set here, single GPU, as verl's colocated rollout does).
* **Weights.**  After every update the loop calls :meth:`VLLMEngine.sync_weights`:
  ``LLM.apply_model(fn)`` runs ``fn(model)`` on the worker's ``nn.Module`` (in this process: no
  copy or pickling of the closure) and ``fn`` feeds the trainer's ``state_dict`` to vLLM's
  ``model.load_weights`` (Hugging Face parameter names); ``LLM.reset_prefix_cache()`` then drops
  KV blocks computed with the old weights.  With ``sleep_level=1`` (``LLM(enable_sleep_mode=
  True)``, docs.vllm.ai features/sleep_mode) the engine sleeps during the update -- weights
  offloaded to CPU, KV cache freed -- and wakes before the new weights are loaded.

Rows are charged to the ledger up to and including a forced EOS, as with the hf engine.  None of
this runs without CUDA; ``tests/test_gpu.py`` exercises it where vLLM and a GPU exist.
"""
from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lengthctl.base import REASONS, RowBatch, RowController, TokenText
from trainer.engine import Engine, Generation, RowSpec

EXTRA_ARGS_KEY = "allocbench_row"


class VLLMUnavailable(RuntimeError):
    """vLLM cannot be used here (not installed, or no CUDA device); a one-line message."""


def check_vllm(device: str = "cuda") -> None:
    if not str(device).startswith("cuda"):
        raise VLLMUnavailable(f"engine 'vllm' needs device 'cuda', not {device!r}")
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise VLLMUnavailable("engine 'vllm' needs vLLM, which is not installed: "
                              "pip install 'allocbench[gpu]' (CUDA only), or use engine 'hf'") \
            from None


# ---------------------------------------------------------------------- the stop rule ----------
class RuleGroup:
    """One stop rule's rows of a ``generate`` call: the rule as a batch (:class:`RowBatch`, built
    as the hf engine builds it) and the generated ids it reads, copied from vLLM's output lists
    one new token at a time (never the whole prefix per step)."""

    def __init__(self, batch: RowBatch, width: int, pad_id: int) -> None:
        n = len(batch.controllers)
        self.batch = batch
        self.history = np.full((n, max(int(width), 1)), pad_id, dtype=np.int64)
        self.filled = np.zeros(n, dtype=np.int64)

    def record(self, local: int, tokens: list[int], t: int) -> None:
        """Make row ``local``'s history hold its first ``t`` generated ids."""
        done = int(self.filled[local])
        if t > done:
            self.history[local, done:t] = tokens[done:t]
            self.filled[local] = t


def rule_groups(controllers: list[RowController | None], text: TokenText, width: int,
                pad_id: int) -> list[tuple[RuleGroup, int] | None]:
    """Each row's (rule group, index in it); rows are grouped by ``batch_key`` as in the hf
    engine, so a rule's batch code decides its rows together."""
    members: dict = {}
    for i, c in enumerate(controllers):
        if c is not None:
            members.setdefault(c.batch_key(), []).append(i)
    out: list[tuple[RuleGroup, int] | None] = [None] * len(controllers)
    for rows in members.values():
        group_controllers = [controllers[i] for i in rows]
        group = RuleGroup(type(group_controllers[0]).batch(group_controllers, text), width, pad_id)
        for local, i in enumerate(rows):
            out[i] = (group, local)
    return out


@dataclass
class RowState:
    """What the logits processor knows about one row (keyed by ``extra_args[EXTRA_ARGS_KEY]``)."""

    group: RuleGroup
    local: int                       # the row's index in its group's batch
    prompt_len: int
    eos_id: int
    temperature: float
    tokens: list[int] = field(default_factory=list)   # generated tokens seen so far
    last_t: int = -1                 # last position the rule was asked about
    reason: str | None = None        # "stopped" / "aborted" once the rule fired
    forced_at: int | None = None     # position of the forced EOS
    eos_logprob: float = float("nan")

    @property
    def flags(self) -> dict:
        return self.group.batch.flags(self.local)

    @property
    def weight(self) -> float:
        return self.group.batch.weight(self.local)

    @property
    def row_fields(self) -> dict:
        return self.group.batch.row_fields(self.local)


ROWS: dict[str, RowState] = {}       # the registry; filled by generate(), read by the processor


def decide_rows(logits: torch.Tensor, live: list[tuple[int, RowState]]) -> list[tuple[int, int]]:
    """One step of the stop rule for the live rows ``(logits row, state)``, where each state's
    ``tokens`` already holds every token generated before this row's position.

    Each rule group is asked once, with the arrays of its rows that reached a new position
    (rows of one vLLM step may be at different positions; a position evaluated twice --
    recomputation after preemption -- asks nothing new and re-forces an EOS already decided
    there); margins are computed only for the rows the rule asks about.  Returns the
    ``(logits row, eos id)`` pairs to force."""
    asked: dict[int, tuple[RuleGroup, list[tuple[int, RowState]]]] = {}
    force = []
    for row, state in live:
        t = len(state.tokens)
        if state.reason is not None:
            if state.forced_at == t:
                force.append((row, state.eos_id))
            continue
        if t == state.last_t:
            continue
        state.last_t = t
        asked.setdefault(id(state.group), (state.group, []))[1].append((row, state))
    for group, members in asked.values():
        logit_rows = np.array([row for row, _ in members], dtype=np.int64)
        local = np.array([state.local for _, state in members], dtype=np.int64)
        positions = np.array([len(state.tokens) for _, state in members], dtype=np.int64)
        for (_, state), t in zip(members, positions.tolist()):
            group.record(state.local, state.tokens, t)

        def margins(k, logit_rows=logit_rows):
            index = torch.from_numpy(logit_rows[np.asarray(k, dtype=np.int64)]).to(logits.device)
            top2 = torch.softmax(logits.index_select(0, index).float(), dim=-1).topk(2, dim=-1).values
            return (top2[:, 0] - top2[:, 1]).double().cpu().numpy()

        codes = group.batch.decide(local, positions,
                                   group.history[local, :max(int(positions.max()), 1)], margins)
        for k in np.flatnonzero(codes):
            row, state = members[k]
            state.reason, state.forced_at = REASONS[int(codes[k])], int(positions[k])
            scaled = logits[row].float() / (state.temperature or 1.0)
            state.eos_logprob = float(torch.log_softmax(scaled, dim=-1)[state.eos_id])
            force.append((row, state.eos_id))
    return force


def force_eos(logits: torch.Tensor, force: list[tuple[int, int]]) -> torch.Tensor:
    if force:
        rows = torch.tensor([r for r, _ in force], device=logits.device, dtype=torch.long)
        eos = torch.tensor([e for _, e in force], device=logits.device, dtype=torch.long)
        logits[rows] = -math.inf
        logits[rows, eos] = 0.0
    return logits


def _row_key(params) -> str | None:
    key = (getattr(params, "extra_args", None) or {}).get(EXTRA_ARGS_KEY)
    return key if key in ROWS else None


def _validate(params) -> None:
    key = (getattr(params, "extra_args", None) or {}).get(EXTRA_ARGS_KEY)
    if key is not None and not isinstance(key, str):
        raise ValueError(f"extra_args[{EXTRA_ARGS_KEY!r}] must be a string key")


def _v1_class():
    from vllm.v1.sample.logits_processor import LogitsProcessor, MoveDirectionality

    class StopRuleV1(LogitsProcessor):
        """The stop rule for the V1 model runner (``BatchUpdate`` slots, live output lists)."""

        def __init__(self, vllm_config=None, device=None, is_pin_memory=False):
            self.slots: dict[int, tuple[str, list[int]]] = {}   # batch slot -> (key, outputs)

        @classmethod
        def validate_params(cls, sampling_params) -> None:
            _validate(sampling_params)

        def is_argmax_invariant(self) -> bool:
            return False                      # it forces EOS, which greedy decoding must see

        def update_state(self, batch_update) -> None:
            if batch_update is None:
                return
            for slot in batch_update.removed:     # documented order: removed, added, moved
                self.slots.pop(slot, None)
            for added in batch_update.added:      # (index, params, prompt ids, output ids)
                slot, params, outputs = added[0], added[1], added[-1]
                key = _row_key(params)
                if key is None:
                    self.slots.pop(slot, None)
                else:
                    self.slots[slot] = (key, outputs)
            for src, dst, direction in batch_update.moved:
                a, b = self.slots.pop(src, None), self.slots.pop(dst, None)
                if a is not None:
                    self.slots[dst] = a
                if direction == MoveDirectionality.SWAP and b is not None:
                    self.slots[src] = b

        def apply(self, logits: torch.Tensor) -> torch.Tensor:
            live = []
            for slot, (key, outputs) in self.slots.items():
                state = ROWS.get(key)
                if state is None:
                    continue
                state.tokens = outputs            # the live list vLLM appends to (no copy)
                live.append((slot, state))
            return force_eos(logits, decide_rows(logits, live)) if live else logits

    return StopRuleV1


def _v2_class():
    from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcessor

    class StopRuleV2(LogitsProcessor):
        """The stop rule for Model Runner V2 (persistent request slots, reordered logits rows)."""

        def __init__(self, vllm_config=None, *args, **kwargs):
            self.slots: dict[int, str] = {}        # request slot -> row key

        @classmethod
        def validate_params(cls, sampling_params) -> None:
            _validate(sampling_params)

        def is_argmax_invariant(self) -> bool:
            return False

        def add_request(self, req_idx: int, sampling_params) -> bool:
            key = _row_key(sampling_params)
            if key is None:
                self.slots.pop(req_idx, None)     # slots are recycled: forget the old occupant
                return False
            self.slots[req_idx] = key
            return True

        def apply(self, logits: torch.Tensor, ctx) -> torch.Tensor:
            if not self.slots:
                return logits
            slots = ctx.expanded_idx_mapping.tolist()
            positions = ctx.pos.tolist()
            inputs = ctx.input_ids.tolist()
            live = []
            for row, slot in enumerate(slots):
                key = self.slots.get(slot)
                state = ROWS.get(key) if key is not None else None
                if state is None:
                    continue
                # tokens generated before the one sampled from this row; the token fed at this
                # position is the previous one sampled (none yet on the prefill row)
                t = positions[row] + 1 - state.prompt_len
                if t < 0:
                    continue
                if t == len(state.tokens) + 1:
                    state.tokens.append(int(inputs[row]))
                if t != len(state.tokens):
                    continue                      # a row this rule has no history for
                live.append((row, state))
            return force_eos(logits, decide_rows(logits, live)) if live else logits

    return StopRuleV2


def processor_class():
    """The stop-rule class for the model runner this vLLM will use (see the module docstring)."""
    try:
        import vllm.envs as envs
        v2_runner = bool(getattr(envs, "VLLM_USE_V2_MODEL_RUNNER", False))
    except ImportError:
        v2_runner = False
    if v2_runner:
        try:
            return _v2_class()
        except ImportError:
            # a vLLM whose V2 runner predates custom logits processors falls back to V1 for them
            pass
    return _v1_class()


# ---------------------------------------------------------------------- the engine -------------
class VLLMEngine(Engine):
    _batches = itertools.count()

    def __init__(self, model_dir, model, tokenizer, *, max_new_tokens: int,
                 temperature: float = 1.0, top_p: float = 1.0, dtype: torch.dtype = torch.bfloat16,
                 seed: int = 0, old_logprobs: str = "recompute",
                 gpu_memory_utilization: float = 0.4,
                 max_model_len: int | None = None, enforce_eager: bool = False,
                 sleep_level: int = 0, recompute_tokens: int = 8192):
        check_vllm("cuda")
        if old_logprobs not in ("recompute", "engine"):
            raise ValueError(f"old_logprobs must be 'recompute' or 'engine', not {old_logprobs!r}")
        if sleep_level not in (0, 1):
            raise ValueError("sleep_level must be 0 (off) or 1 (offload weights, free KV cache)")
        # the processor must share this process's registry of row controllers
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        from vllm import LLM
        super().__init__(model, tokenizer)
        self.max_new_tokens = int(max_new_tokens)
        self.temperature, self.top_p = float(temperature), float(top_p)
        self.dtype, self.old_logprobs = dtype, old_logprobs
        self.sleep_level, self.recompute_tokens = int(sleep_level), int(recompute_tokens)
        self._asleep = False
        kwargs = dict(model=str(Path(model_dir)), tokenizer=str(Path(model_dir)),
                      dtype=str(dtype).replace("torch.", ""), seed=int(seed),
                      gpu_memory_utilization=float(gpu_memory_utilization),
                      enable_prefix_caching=True, enforce_eager=bool(enforce_eager),
                      generation_config="vllm", logits_processors=[processor_class()])
        if max_model_len is not None:
            kwargs["max_model_len"] = int(max_model_len)
        if old_logprobs == "engine":
            kwargs["logprobs_mode"] = "processed_logprobs"
        if self.sleep_level:
            kwargs["enable_sleep_mode"] = True
        self.llm = LLM(**kwargs)

    # ------------------------------------------------------------------ generation -------------
    def generate(self, rows: list[RowSpec]) -> list[Generation]:
        from vllm import SamplingParams
        self.wake_up()
        batch = next(self._batches)
        keys: list[str | None] = []
        prompts, params = [], []
        groups = rule_groups([row.controller for row in rows], self.text, self.max_new_tokens,
                             self.pad_id) if any(r.controller is not None for r in rows) \
            else [None] * len(rows)
        for i, (row, member) in enumerate(zip(rows, groups)):
            key = None
            if member is not None:
                key = f"{batch}:{i}"
                ROWS[key] = RowState(member[0], member[1], len(row.prompt_ids), self.eos_id,
                                     self.temperature)
            keys.append(key)
            prompts.append({"prompt_token_ids": list(row.prompt_ids)})
            params.append(SamplingParams(
                n=1, max_tokens=self.max_new_tokens, temperature=self.temperature,
                top_p=self.top_p if self.temperature > 0 else 1.0, seed=int(row.seed),
                stop_token_ids=[self.eos_id], detokenize=False,
                logprobs=0 if self.old_logprobs == "engine" else None,
                extra_args={EXTRA_ARGS_KEY: key} if key is not None else None))
        try:
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
            generations = [self._generation(out.outputs[0], key)
                           for out, key in zip(outputs, keys)]
        finally:
            for key in keys:
                if key is not None:
                    ROWS.pop(key, None)
        with self.phase("logprob"):
            self._recompute(rows, generations)
        return generations

    def _generation(self, completion, key: str | None) -> Generation:
        state = ROWS.get(key) if key is not None else None
        tokens = list(completion.token_ids)
        logprobs = self._engine_logprobs(completion, tokens)
        if state is not None and state.reason is not None:
            finish = state.reason
            tokens, logprobs = tokens[:state.forced_at], logprobs[:state.forced_at]
            tokens.append(self.eos_id)
            logprobs.append(state.eos_logprob)    # vLLM reports the forced token's prob as 1
        elif completion.finish_reason == "length":
            finish = "max_len"
        else:
            finish = "eos"
            if not tokens or tokens[-1] != self.eos_id:   # a stop token vLLM left out
                tokens.append(self.eos_id)
                logprobs.append(float("nan"))
        # the rule's batch holds each row's state (its per-row controller may be stale)
        flags = dict(state.flags) if state is not None else {}
        weight = float(state.weight) if state is not None else 1.0
        fields = dict(state.row_fields) if state is not None else {}
        return Generation(np.asarray(tokens, dtype=np.int64),
                          np.asarray(logprobs, dtype=np.float32), finish, flags, weight, fields)

    def _engine_logprobs(self, completion, tokens: list[int]) -> list[float]:
        if self.old_logprobs != "engine" or completion.logprobs is None:
            return [float("nan")] * len(tokens)
        out = []
        for token, entry in zip(tokens, completion.logprobs):
            item = entry.get(token) if entry else None
            out.append(float(item.logprob) if item is not None else float("nan"))
        return out + [float("nan")] * (len(tokens) - len(out))

    @torch.no_grad()
    def _recompute(self, rows: list[RowSpec], generations: list[Generation]) -> None:
        """Old log-probs from the trainer's model, as the hf engine defines them; also fills
        any value vLLM did not report (a NaN) in engine mode."""
        from trainer.grpo import token_logprobs
        todo = [i for i, g in enumerate(generations)
                if self.old_logprobs == "recompute" or np.isnan(g.logprobs).any()]
        todo.sort(key=lambda i: len(rows[i].prompt_ids) + len(generations[i].tokens))
        temperature = self.temperature or 1.0
        was_training = self.model.training
        self.model.eval()
        start = 0
        while start < len(todo):
            # batches of about recompute_tokens tokens (a long row goes alone)
            end = start + 1
            while end < len(todo) and (end - start + 1) * (
                    len(rows[todo[end]].prompt_ids) + len(generations[todo[end]].tokens)) \
                    <= self.recompute_tokens:
                end += 1
            chunk = todo[start:end]
            seqs = [list(rows[i].prompt_ids) + generations[i].tokens.tolist() for i in chunk]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            attn = torch.zeros((len(chunk), width), dtype=torch.long)
            targets = torch.zeros((len(chunk), width - 1), dtype=torch.long)
            for j, s in enumerate(seqs):
                ids[j, :len(s)] = torch.tensor(s)
                attn[j, :len(s)] = 1
                targets[j, :len(s) - 1] = torch.tensor(s[1:])
            logp = token_logprobs(self.model, ids.to(self.device), attn.to(self.device),
                                  targets.to(self.device), temperature).float().cpu().numpy()
            for j, i in enumerate(chunk):
                p, n = len(rows[i].prompt_ids), len(generations[i].tokens)
                values = logp[j, p - 1:p - 1 + n]
                if self.old_logprobs == "recompute":
                    generations[i].logprobs = values.astype(np.float32)
                else:
                    missing = np.isnan(generations[i].logprobs)
                    generations[i].logprobs[missing] = values[missing]
            start = end
        self.model.train(was_training)

    # ------------------------------------------------------------------ weights and memory -----
    def sleep(self) -> None:
        """Free the GPU memory vLLM holds while the trainer updates (``sleep_level=1``)."""
        if self.sleep_level and not self._asleep:
            self.llm.sleep(level=self.sleep_level)
            self._asleep = True

    def wake_up(self) -> None:
        if self._asleep:
            self.llm.wake_up()
            self._asleep = False

    @torch.no_grad()
    def sync_weights(self, model=None) -> None:
        """Load the trainer's current weights into vLLM (see the module docstring)."""
        model = self.model if model is None else model
        self.wake_up()
        dtype = self.dtype
        state = model.state_dict()

        def load(vllm_model):
            vllm_model.load_weights((name, tensor.detach().to(dtype))
                                    for name, tensor in state.items())
            return None

        self.llm.apply_model(load)
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        shutdown = getattr(core, "shutdown", None)
        if shutdown is not None:
            shutdown()
        del llm
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
