"""ARRoL (arXiv 2603.24840, "Prune as You Generate: Online Rollout Pruning for Faster and Better
RLVR", Xu et al., ACL 2026) as a method: uniform GRPO counts with ARRoL's online pruning.

The pruning rule -- quality head, calibration, per-group survival draw at ``l_detect`` -- is the
stop rule ``lengthctl/arrol.py`` (its docstring has the equations, defaults, provenance and
departures; docs/METHODS.md §ARRoL the specification).  Any allocator runs it with
``--set METHOD.length=arrol``; this module names the pairing the paper evaluates:

* ``plan``: ``round_half_up(b · G)`` rollouts for each of the ``M`` prompts, as uniform GRPO
  (the paper prunes GRPO's and DAPO's groups; their reduced-budget rows are UNKNOWN, so the
  harness's uniform ``b · G`` stands in, as for every other comparator).
* Pruned rows (``Rollout.pruned``) leave their groups in the loop, after ``select``
  (``trainer/step.py``; the paper re-batches the survivors for log-probability computation and
  the update), so advantages are normalised over the survivors only.  The rule's
  ``pruned_in_baseline=true`` (``--set arrol.length.pruned_in_baseline=true``) keeps them in
  their group's mean and std instead -- an ablation, not the paper.
* Groups that keep fewer than two rows give no gradient (the harness rule, docs/DESIGN.md §Loop); the
  rule keeps at least ``min_keep = 2`` rows of every group it prunes.

Budget: every generated token is charged, a pruned row's up to ``l_detect`` (plus the forced
EOS); the step plans uniform GRPO's ``M · round(b·G)`` rollouts and realises fewer tokens -- the
source of ARRoL's speed-up (1.7x reported [paper abstract]; DUET's Fig. 1 gives its ARRoL 1.30x
over GRPO [paper, DUET]).
"""
from __future__ import annotations

from allocators import register
from allocators.uniform import UniformGRPO


@register("arrol")
class Arrol(UniformGRPO):
    """Uniform GRPO counts with ARRoL's stop rule (pruned rows leave their groups)."""

    default_length = "arrol"

    def select(self, step, rollouts):
        # diagnostics: under ARRoL's rule the only aborted rows are the pruned ones
        self.step_metrics = {"pruned_rows": sum(r.finish == "aborted" for r in rollouts),
                             "rows": len(rollouts)}
        return super().select(step, rollouts)

    def resolved_options(self) -> dict:
        return {**super().resolved_options(), "per_prompt": self.per_prompt(),
                "length_control": self.default_length}
