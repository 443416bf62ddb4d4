"""The length-control interface: a per-rollout controller the rollout engine calls every token.

The engine asks the run's :class:`LengthController` for one :class:`RowController` per rollout
(``None`` means "never stops early", which lets the engine skip per-token work).  Before sampling
position ``t`` of a row the engine calls ``row.decide(t, margin, tail)``:

* ``t``       tokens generated so far in this row;
* ``margin``  top-1 minus top-2 probability of the next-token distribution (softmax of the raw
              logits, temperature 1), or ``nan`` when the controller said it does not need it;
* ``tail``    ``tail(k)`` decodes the last ``k`` generated tokens to text.

It returns ``None`` to continue, or ``"stopped"`` / ``"aborted"``: the engine then emits EOS at
this position (charged as one generated token, with the policy's own log-probability of EOS as
the old log-prob) and removes the row from the batch.  Every decision may depend only on the
row's own prefix and its own random stream, so results never depend on batch composition.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

from allocators.options import Options


class RowController:
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
        """Per-row metrics copied onto the rollout's flags (e.g. saw_marker, eps_kept)."""
        return {}


class LengthController:
    name: ClassVar[str] = ""
    # the rule's options (allocators.options), read as self.opts.NAME
    Options: ClassVar[type[Options]] = Options

    def __init__(self, max_response_tokens: int, seed: int, **options: Any) -> None:
        self.opts = self.Options.parse(options, "length")
        self.max_response_tokens = max_response_tokens
        self.seed = seed

    def row_controller(self, step: int, control: dict | None, row_seed: int) -> RowController | None:
        """A controller for one rollout; ``control`` is the allocator's per-prompt options."""
        return None

    def step_metrics(self, rollouts: list) -> dict:
        """Numbers for the step's record (under ``length``), from the step's rollouts and the
        state they were generated with: called before :meth:`observe`."""
        return {}

    def observe(self, step: int, rollouts: list) -> None:
        """Update cross-step state (e.g. DUET's K1/K2 window) from the step's rollouts."""

    def resolved_options(self) -> dict:
        return self.opts.to_dict()
