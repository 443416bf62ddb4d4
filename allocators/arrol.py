"""ARRoL (arXiv 2603.24840, "Prune as You Generate: Online Rollout Pruning for Faster and Better
RLVR", Xu et al., ACL 2026) as a method: uniform GRPO counts with ARRoL's online pruning.

The pruning rule -- quality head, calibration, per-group survival draw at ``l_detect`` -- is the
length controller ``lengthctl/arrol.py`` (its docstring has the equations, defaults, provenance
and departures; docs/METHODS.md §ARRoL the specification).  This module is the allocation side:

* ``plan``: ``round_half_up(b · G)`` rollouts for each of the ``M`` prompts, as uniform GRPO
  (the paper prunes GRPO's and DAPO's groups; their reduced-budget rows are UNKNOWN, so the
  harness's uniform ``b · G`` stands in, as for every other comparator).
* ``select``: each group without its pruned rows (the paper re-batches the survivors for
  log-probability computation and the update; a pruned row carries
  ``lengthctl.arrol.PRUNED_FLAG``).  Advantages are then normalised over the survivors only.
  ``pruned_in_baseline=True`` keeps pruned rows in their group's mean and std as scored (the
  harness's rule for DUET's aborted rows) -- an ablation, not the paper.
* Groups that keep fewer than two rows give no gradient (the harness rule, docs/DESIGN.md §Loop); the
  rule keeps at least ``min_keep = 2`` rows of every group it prunes.

Budget: every generated token is charged, a pruned row's up to ``l_detect`` (plus the forced
EOS); the step plans uniform GRPO's ``M · round(b·G)`` rollouts and realises fewer tokens -- the
source of ARRoL's speed-up (1.7x reported [paper abstract]; DUET's Fig. 1 gives its ARRoL 1.30x
over GRPO [paper, DUET]).
"""
from __future__ import annotations

from dataclasses import dataclass

from allocators import register
from allocators.base import group_rows
from allocators.options import Options, option
from allocators.uniform import UniformGRPO

PRUNED_FLAG = "arrol_pruned"          # = lengthctl.arrol.PRUNED_FLAG (allocators stay apart)


@dataclass(frozen=True)
class ArrolAllocationOptions(Options):
    pruned_in_baseline: bool = option(False, "keep pruned rows in their group's mean and std "
                                      "(no gradient); false = drop them, as the paper does")


@register("arrol")
class Arrol(UniformGRPO):
    """Uniform GRPO counts; ARRoL's length control prunes, ``select`` drops the pruned rows."""

    length_control = "arrol"
    Options = ArrolAllocationOptions

    def select(self, step, rollouts):
        groups = group_rows(rollouts)
        pruned = sum(bool(r.flags.get(PRUNED_FLAG)) for r in rollouts)
        self.step_metrics = {"pruned_rows": pruned, "rows": len(rollouts)}
        if self.opts.pruned_in_baseline:
            return groups
        return [[r for r in g if not r.flags.get(PRUNED_FLAG)] for g in groups]

    def resolved_options(self) -> dict:
        return {**super().resolved_options(), "per_prompt": self.per_prompt(),
                "length_control": self.length_control}
