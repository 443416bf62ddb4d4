"""The token-budget protocol: a run trains until it has spent a fixed generation budget ``T``.

Two protocols (``Preset.protocol``):

* ``steps`` — the original one: ``steps`` training steps, an evaluation every ``eval_every``
  steps, the learning-rate schedule on the step count.  Kept by name so that the committed
  per-step sweeps and the papers' per-step framing stay reproducible (a per-step preset's
  ``config.json`` is byte-for-byte what it was before this protocol existed: the token fields are
  left out of :meth:`trainer.config.Preset.to_dict`).
* ``tokens`` — every run gets the same budget ``T = token_budget`` of charged generation units
  (``budget_unit``: ``tokens``, the ledger's charged tokens — pilots, discarded groups, aborted
  and pruned rows included — or ``rollouts``, for the rollout-count papers) and trains until the
  cumulative charge first reaches ``T``; the step count follows (a run at b = 0.5 takes about
  twice the steps of one at b = 1).  ``step_cap`` is a guard: a run that reaches it first stops
  there and its summary says how much of ``T`` it spent (``budget_spent``).  The last step
  overshoots ``T`` by at most that step's charge; the overshoot is recorded.

Evaluations (token protocol): at step 0 and after the first step whose cumulative charge reaches
each of ``eval_points`` (K) equal fractions ``j T / K`` of the budget, so every run's curve has
points at the same budget positions; each record carries ``budget_point`` (j), ``budget_target``
(``j T / K``) and ``overshoot`` (charge − target).  One step that crosses two fractions (only
when a step charges more than ``T / K``) is evaluated once, as the larger.

Schedule decision.  Anything defined on steps must mean the same thing in runs of different step
counts, so under the token protocol the learning-rate schedule runs on the fraction ``f`` of
``T`` spent, not on the step index: the update of a step uses ``f`` after that step's rollouts
are generated (it is known then, and it is what the update pays for), warm-up is linear over the
first ``warmup_steps / steps`` of the budget and cosine decay runs over ``f`` in [0, 1].  For the
reference run — GRPO at b = 1, whose ``T`` is about ``steps`` steps — this is the per-step
schedule (step k's update sees ``f ≈ (k+1)/steps``, warm-up factor ``(k+1)/warmup_steps``); a run
at b = 0.5 warms up over the same tokens, i.e. twice the steps.  Scheduling on steps instead
would give a half-budget run a warm-up half as long in tokens and a cosine that ends at half
the budget, a confound of exactly the kind the protocol removes.  Checkpoints are written at
every evaluation and every ``checkpoint_every`` steps; they never change results (a resumed run
equals an uninterrupted one), only what an interruption loses.  Method schedules defined on
steps (e.g. CoBA-RL's over ``setting.steps``) receive ``steps`` as their horizon: the reference
run's step count, documented as such; they are the methods' own and are not rescaled here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

PROTOCOLS = ("steps", "tokens")
BUDGET_UNITS = ("tokens", "rollouts")
# the Preset fields that only the token protocol reads (left out of a per-step config)
TOKEN_FIELDS = ("token_budget", "budget_unit", "eval_points", "step_cap")


class ProtocolError(ValueError):
    """A preset whose protocol fields do not make a run (one line)."""


def check_protocol(p) -> None:
    """Errors a user can fix, before any work."""
    if p.protocol not in PROTOCOLS:
        raise ProtocolError(f"unknown protocol {p.protocol!r}; choose one of "
                            f"{', '.join(PROTOCOLS)}")
    if p.protocol == "tokens" and p.token_budget is None:
        raise ProtocolError(f"preset {p.name!r} uses the token protocol but sets no "
                            f"token_budget (--set preset.token_budget=T)")


@dataclass(frozen=True)
class BudgetClock:
    """The token protocol's clock: what has been spent, when to evaluate, when to stop."""

    total: float            # T, in budget units
    unit: str               # "tokens" or "rollouts"
    points: int             # K evaluation fractions
    step_cap: int
    warmup: float           # warm-up, as a fraction of T
    schedule: str           # "constant" or "cosine"

    def spent(self, ledger) -> float:
        return float(ledger.cumulative_tokens if self.unit == "tokens"
                     else ledger.cumulative_rollouts)

    def fraction(self, spent: float) -> float:
        return spent / self.total

    def reached(self, spent: float) -> int:
        """The largest j in 0..K with ``spent >= j T / K`` (integer arithmetic where exact,
        so that a charge of exactly ``j T / K`` counts as reaching it)."""
        return min(self.points, int(math.floor(spent * self.points / self.total + 1e-12)))

    def target(self, point: int) -> float:
        return self.total * point / self.points

    def finished(self, spent: float, steps_done: int) -> bool:
        return spent >= self.total or steps_done >= self.step_cap

    def lr_factor(self, spent: float) -> float:
        """The learning-rate multiplier at ``spent`` (see the module docstring)."""
        f = min(1.0, max(0.0, self.fraction(spent)))
        warm = min(1.0, f / self.warmup) if self.warmup > 0 else 1.0
        if self.schedule == "cosine":
            return warm * 0.5 * (1 + math.cos(math.pi * f))
        return warm

    def eval_fields(self, spent: float, point: int | None) -> dict:
        """What an evaluation record says about where on the budget it was made."""
        if point is None:          # stopped by the step cap before reaching a fraction
            return {"budget_point": None, "budget_target": None, "overshoot": None,
                    "budget_fraction_spent": round(self.fraction(spent), 6)}
        return {"budget_point": point, "budget_target": self.target(point),
                "overshoot": spent - self.target(point),
                "budget_fraction_spent": round(self.fraction(spent), 6)}


def budget_clock(p) -> BudgetClock | None:
    """The clock of preset ``p`` under the token protocol; None under the per-step one."""
    if p.protocol != "tokens":
        return None
    check_protocol(p)
    return BudgetClock(float(p.token_budget), p.budget_unit, p.eval_points, p.step_cap,
                       p.warmup_steps / p.steps if p.warmup_steps else 0.0, p.schedule)


def expected_steps(p, budget: float) -> int:
    """The steps a run is expected to take, for progress bars: the preset's ``steps`` under the
    per-step protocol; under the token protocol the reference run's ``steps`` (it spends about T
    in them at b = 1) over the budget fraction, capped — an estimate (a method that spends more
    per step, e.g. DAPO, finishes sooner; the bar then jumps to its end)."""
    if p.protocol != "tokens":
        return p.steps
    return min(p.step_cap, math.ceil(p.steps / budget))


def last_point(evals: list[dict]) -> int:
    """The largest budget point already evaluated (0: only the step-0 evaluation), so that a
    resumed run does not evaluate a fraction twice."""
    return max([e.get("budget_point") or 0 for e in evals] or [0])
