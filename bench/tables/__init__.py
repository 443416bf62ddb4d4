"""Tables built from a sweep directory: every number comes from the runs' own files.

A sweep directory holds one sub-directory per (method, budget, seed) run; only finished runs
(those with ``summary.json``) enter a table, so a half-done run never skews a mean.

Intervals: with several seeds, a cell shows ``mean ± half-width`` of a two-sided 95% Student-t
interval over seeds (``t_{0.975, n-1} · s / sqrt(n)``, ``s`` the sample standard deviation); with
one seed, the value alone.

Paired comparisons (the Δ tables) difference two runs that share a seed — same warm start, same
prompt order, same evaluation samples (common random numbers) — and give the t-interval of those
per-seed differences, which is much tighter than comparing two independent means.

Headline accuracy, probability of improvement, IQM, normalised score and minimum detectable
effect: :mod:`bench.stats`.  Controls (``oracle``, ``anti-oracle``) sort last and are labelled
``(control)``: reference rows, never contenders.

Cost-to-target (default target: GRPO at b = 1's mean over its last three evaluations, mean over
seeds): a run "first reaches" the target at its first evaluation (in step order, the
step-0 evaluation of the initial policy included) whose held-out ``mean_at_k`` is ≥ the target
(with a 1e-9 tolerance for float round-off); the cost is that evaluation's cumulative tokens,
rollouts and training seconds, read as recorded — no interpolation between evaluations, so the
cost is an upper bound at the evaluation period's resolution.  Per (method, budget) the cell is
the mean ± t-interval over the seeds that reached the target, followed by ``(k/n)`` when only k
of n seeds reached it (such a cell is optimistic: the seeds that never reached it are left out);
``never`` when no seed reached it.  Ratios ``vs GRPO`` = GRPO (b = 1)'s mean cost / the run's
mean cost (> 1: the run gets there cheaper), from the same means.

Every function here is deterministic given the files, so ``python -m bench.report`` rebuilds
byte-identical ``tables.md`` and CSVs.

The package splits that by job: :mod:`~bench.tables.sweep` loads a sweep,
:mod:`~bench.tables.cells` formats cells, :mod:`~bench.tables.clock` chooses the clock,
:mod:`~bench.tables.speedup` holds the speed-up and paired statistics,
:mod:`~bench.tables.builders` the standard tables, :mod:`~bench.tables.registry` the one registry
of tables (standard and papers'), :mod:`~bench.tables.write` writes them.  The names below are
re-exported so that ``from bench.tables import X`` reads any of them.
"""
from __future__ import annotations

from bench.stats import t_interval  # noqa: F401
from bench.tables.builders import *  # noqa: F401,F403
from bench.tables.cells import *  # noqa: F401,F403
from bench.tables.clock import *  # noqa: F401,F403
from bench.tables.registry import *  # noqa: F401,F403
from bench.tables.speedup import *  # noqa: F401,F403
from bench.tables.sweep import *  # noqa: F401,F403
from bench.tables.write import *  # noqa: F401,F403
