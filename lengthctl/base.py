"""The length-control interface: stop rules that the rollout engine asks in batches.

The engine asks the run's :class:`LengthController` for one :class:`RowController` per rollout
(``None`` means "never stops early", which lets the engine skip all stop-rule work).  A row
controller holds one rollout's options (threshold, random seed); the engine groups the rows of a
generation call by :meth:`RowController.batch_key` and hands each group to the class's
:meth:`RowController.batch`, which returns a :class:`RowBatch`: the rule for all those rows at
once, with its state in arrays.

Once per check position the engine calls ``batch.decide(rows, positions, history, margins,
logprobs=logprobs)`` for the live rows of the batch:

* ``rows``       indices into the batch's controllers (the live rows);
* ``positions``  tokens generated so far by each of those rows (the rule decides about the token
                 at this position, before it is sampled);
* ``history``    the generated token ids, one row per entry of ``rows`` (valid up to its
                 position), so token-level facts are found by array lookups on ids
                 (:meth:`TokenText.ids_containing`) rather than by decoding tails;
* ``margins``    ``margins(k)`` returns top-1 minus top-2 probability of the next-token
                 distribution (softmax of the raw logits, temperature 1) for the entries ``k``
                 of ``rows``; the engine computes it only for the rows a rule asks about.
* ``logprobs``   ``logprobs(k)`` returns the sampled tokens' log-probabilities (the old-policy
                 log-probs the row will carry, one row per entry ``k`` of ``rows``, valid up to
                 its position); copied only for the rows a rule asks about (ARRoL's features;
                 added with ARRoL, issue 16 -- a rule that needs none ignores it).

A batch whose class sets ``needs_hidden = True`` also gets ``hidden=hidden`` at the position
it names by :meth:`RowBatch.next_position`: ``hidden(k)`` returns the policy's last-layer hidden
state that produced that position's next-token logits, one row per entry ``k`` of ``rows``
(``None`` at position 0, which the prefill produces); the engine runs that one forward pass
with ``output_hidden_states`` and no other (ARRoL's features; issue 16).

It returns one code per row: :data:`CONTINUE`, :data:`STOPPED` or :data:`ABORTED` (names in
:data:`REASONS`).  The engine then emits EOS at this position (charged as one generated token,
with the policy's own log-probability of EOS as the old log-prob) and removes the row from the
batch.  ``batch.next_position()`` is the first position at which any row has something to
check, so the engine asks nothing in between.  Every decision may depend only on the row's own
prefix and its own random stream, so results never depend on batch composition.

A rule that only implements the per-row :meth:`RowController.decide` (``decide(t, margin,
tail)``, ``tail(k)`` the decoded last ``k`` tokens) works unchanged: the default batch,
:class:`RowwiseBatch`, asks each row in turn at every position.  Both engines use this
interface: the hf engine asks all live rows at one position; the vLLM engine's logits processor
asks, once per engine step, the rows that reached a new position, which may differ from row to
row (a rule may be asked at positions where nothing is due, and must then answer CONTINUE).
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Hashable, Sequence

import numpy as np

from core.options import Options

CONTINUE, STOPPED, ABORTED = 0, 1, 2
REASONS = {STOPPED: "stopped", ABORTED: "aborted"}
_CODES = {reason: code for code, reason in REASONS.items()}


class TokenText:
    """What a rule may know about the engine's vocabulary: each id's text, and a decoder."""

    def __init__(self, pieces: Sequence[str], decode: Callable[[Sequence[int]], str]) -> None:
        self.pieces = list(pieces)
        self.decode = decode
        self._containing: dict[str, np.ndarray] = {}

    def ids_containing(self, chars: str) -> np.ndarray:
        """Boolean mask over token ids: the id's own text holds at least one of ``chars``."""
        mask = self._containing.get(chars)
        if mask is None:
            mask = np.fromiter((any(c in p for c in chars) for p in self.pieces), dtype=bool,
                               count=len(self.pieces))
            self._containing[chars] = mask
        return mask


class RowBatch:
    """The stop rule of many rows at once (module docstring)."""

    # whether ``decide`` takes ``hidden=`` (the last-layer states at ``next_position()``)
    needs_hidden: bool = False

    def __init__(self, controllers: Sequence["RowController"], text: TokenText) -> None:
        self.controllers = list(controllers)
        self.text = text

    def next_position(self) -> int:
        """The first position at which any row may need a decision (0: ask at every one)."""
        return 0

    def decide(self, rows: np.ndarray, positions: np.ndarray, history: np.ndarray,
               margins: Callable[[np.ndarray], np.ndarray],
               logprobs: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        return np.zeros(len(rows), dtype=np.int8)

    def flags(self, i: int) -> dict:
        """Row ``i``'s diagnostic flags, copied onto its rollout (e.g. saw_marker)."""
        return dict(self.controllers[i].flags)

    def row_fields(self, i: int) -> dict:
        """Row ``i``'s typed :class:`core.rows.Rollout` fields that change the loop, by field
        name (``pruned``: leaves its group before the advantage; ``kept_by_chance``)."""
        return dict(self.controllers[i].row_fields)

    def weight(self, i: int) -> float:
        """Row ``i``'s advantage-weight multiplier when generation ends (a batch rule keeps its
        rows' state itself, so the per-row controllers' own ``weight`` may be stale)."""
        return float(self.controllers[i].weight)


class RowwiseBatch(RowBatch):
    """Any per-row controller as a batch: each live row's ``decide`` at every position."""

    def decide(self, rows, positions, history, margins, logprobs=None):
        out = np.zeros(len(rows), dtype=np.int8)
        want = np.array([self.controllers[r].needs_margin for r in rows], dtype=bool)
        values = np.full(len(rows), np.nan)
        if want.any():
            values[want] = margins(np.flatnonzero(want))
        decode = self.text.decode
        for k, (r, t) in enumerate(zip(rows.tolist(), positions.tolist())):
            ids = history[k]

            def tail(n: int, ids=ids, t=t) -> str:
                return decode(ids[max(0, t - n):t].tolist()) if n > 0 else ""

            reason = self.controllers[r].decide(t, float(values[k]), tail)
            if reason is not None:
                out[k] = _CODES[reason]
        return out


class RowController:
    """One rollout's stop rule; the per-row reference of a batch rule (module docstring)."""

    needs_margin: bool = False

    def decide(self, t: int, margin: float, tail: Callable[[int], str]) -> str | None:
        return None

    @property
    def weight(self) -> float:
        """Multiplier on the rollout's advantage weight, read when generation ends (DUET: the
        inverse probability of a row kept by chance at the abort gate)."""
        return 1.0

    @property
    def flags(self) -> dict:
        """Per-row diagnostics copied onto the rollout's flags (e.g. saw_marker)."""
        return {}

    @property
    def row_fields(self) -> dict:
        """Typed rollout fields set by the rule (:meth:`RowBatch.row_fields`)."""
        return {}

    def batch_key(self) -> Hashable:
        """Rows with equal keys are decided by one batch of this class."""
        return type(self)

    @classmethod
    def batch(cls, controllers: Sequence["RowController"], text: TokenText) -> RowBatch:
        return RowwiseBatch(controllers, text)


class LengthController:
    name: ClassVar[str] = ""
    # the rule's options (core.options), read as self.opts.NAME
    Options: ClassVar[type[Options]] = Options
    # a rule that needs what only the hf engine hands it (ARRoL: the sampled log-probs and the
    # hidden states at its position, per group) runs only there; ``make_controllers`` refuses
    # another engine before any work
    hf_engine_only: ClassVar[bool] = False

    def __init__(self, max_response_tokens: int, seed: int, **options: Any) -> None:
        self.opts = self.Options.parse(options, "length")
        if max_response_tokens < 1:
            raise ValueError(f"{self.name or type(self).__name__}: max_response_tokens must be "
                             f">= 1, got {max_response_tokens}")
        self.max_response_tokens = max_response_tokens
        self.seed = seed

    def row_controller(self, step: int, control: dict | None, row_seed: int,
                       group: int | None = None) -> RowController | None:
        """A controller for one rollout; ``control`` is the allocator's per-prompt options,
        ``group`` the loop's group id of the row (rows of one request share it; a rule that
        decides per group, ARRoL's, reads it; added with ARRoL, issue 16)."""
        return None

    def step_metrics(self, rollouts: list) -> dict:
        """Numbers for the step's record (under ``length``), from the step's rollouts and the
        state they were generated with: called before :meth:`observe`."""
        return {}

    def observe(self, step: int, rollouts: list) -> None:
        """Update cross-step state (e.g. DUET's K1/K2 window) from the step's rollouts."""

    def resolved_options(self) -> dict:
        return self.opts.to_dict()
