"""The tuned uniform baseline: uniform GRPO's best configuration at the same budget ``T``.

At equal tokens, GRPO with fewer rollouts per step gets more optimizer steps per token, so GRPO
at b = 1 is not the strongest uniform reference (IsoCompute, arXiv 2603.12151: the
compute-optimal uniform group size depends on the budget).  The grid, relative to the preset's
M prompts x G rollouts per step:

* group size G/2, G, 2G at fixed rollouts per step M G (prompts per step 2M, M, M/2);
* per-step budget b = 0.5 and 0.25 at G (``round(b G)`` rollouts for each of M prompts, uniform
  GRPO's own meaning of b).

Five configurations (on noisy-chain: 64x4, 32x8, 16x16 at b = 1; 32x8 at b = 0.5 and 0.25).
They run as ``grpo`` under ``<sweep>/uniform-grid/M<m>xG<g>/`` (``RunSpec.group``), so they never
enter the sweep's own per-method tables.  The configuration is selected on the *selection
seeds* — grid seeds that no run of the sweep itself uses — by the mean area under the
accuracy-vs-tokens curve over [0, T] (:mod:`bench.equal_compute`), so that the choice is not
fitted to the seeds it is then compared on; the chosen configuration is then run at the
reported seeds (read from the sweep itself when it is GRPO at the preset's M x G and a budget
the sweep ran).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from trainer.spec import RunSpec

GRID_DIR = "uniform-grid"
DEFAULT_SELECTION_SEEDS = "1000"      # far from the reported seeds 0, 1, 2, ...


@dataclass(frozen=True)
class UniformConfig:
    prompts: int
    group: int
    budget: float

    @property
    def folder(self) -> str:
        return f"{GRID_DIR}/M{self.prompts}xG{self.group}"

    @property
    def label(self) -> str:
        return f"{self.prompts}x{self.group}, b={self.budget:g}"


def grid(prompts: int, group: int) -> list[UniformConfig]:
    """The five configurations around a preset's M x G (group sizes that would fall below 2 or
    need a fractional prompt count are left out)."""
    configs = [UniformConfig(prompts, group, 1.0)]
    if group % 2 == 0 and group >= 4:
        configs.append(UniformConfig(prompts * 2, group // 2, 1.0))
    if prompts % 2 == 0:
        configs.append(UniformConfig(prompts // 2, group * 2, 1.0))
    configs += [UniformConfig(prompts, group, 0.5), UniformConfig(prompts, group, 0.25)]
    return sorted(configs, key=lambda c: (-c.budget, c.group))


def spec_for(config: UniformConfig, seed: int, template: RunSpec) -> RunSpec:
    """``grpo`` at ``config`` and ``seed``, the template's preset otherwise."""
    preset = replace(template.preset, prompts_per_step=config.prompts, group_size=config.group)
    return RunSpec("grpo", config.budget, seed, preset, {}, {}, template.log_to,
                   group=config.folder)


def in_sweep(config: UniformConfig, preset, budgets) -> bool:
    """Whether the sweep's own ``grpo`` runs are this configuration."""
    return (config.prompts, config.group) == (preset.prompts_per_step, preset.group_size) and \
        any(abs(config.budget - b) < 1e-9 for b in budgets)


def selection_specs(template: RunSpec, seeds) -> list[RunSpec]:
    p = template.preset
    return [spec_for(c, s, template) for c in grid(p.prompts_per_step, p.group_size)
            for s in seeds]


def config_of_folder(path: Path, budget: float) -> UniformConfig | None:
    """The configuration of a grid run directory ``.../M<m>xG<g>/grpo__b..__s..``."""
    name = Path(path).name
    try:
        m, g = name[1:].split("xG")
        return UniformConfig(int(m), int(g), budget)
    except ValueError:
        return None
