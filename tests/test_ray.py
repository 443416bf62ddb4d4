"""Sweeps on a local Ray instance give the local runner's results (extra ``dist``)."""
import pytest

from bench.presets import with_overrides
from tests.test_runner import untimed
from trainer.loop import Run, RunError, RunSpec
from trainer.rundir import read_json

ray = pytest.importorskip("ray", reason="Ray is not installed (extra 'dist')")

from bench.ray_executor import run_on_ray  # noqa: E402


def test_two_smoke_runs_on_ray_equal_the_local_runner(smoke_preset, tmp_path):
    preset = with_overrides(smoke_preset, steps=2, eval_every=2, checkpoint_every=2)
    specs = [RunSpec("grpo", 1.0, 0, preset), RunSpec("grpo", 0.5, 0, preset)]
    seen = []
    summaries = run_on_ray(specs, tmp_path / "ray", progress=lambda spec, s: seen.append(spec),
                           num_cpus=2)
    assert list(summaries) == [s.run_name() for s in specs]
    assert sorted(s.run_name() for s in seen) == sorted(summaries)
    for spec in specs:
        run_dir = tmp_path / "ray" / spec.run_name()
        assert untimed(read_json(run_dir / "summary.json")) == untimed(summaries[spec.run_name()])
        local = Run(spec, tmp_path / "local" / spec.run_name(), log=lambda *a: None).execute()
        assert untimed(local) == untimed(summaries[spec.run_name()])
    assert not ray.is_initialized()          # the instance it started is shut down again


def test_finished_runs_are_reused_and_a_failure_is_one_line(smoke_preset, tmp_path):
    preset = with_overrides(smoke_preset, steps=1, eval_every=1, checkpoint_every=1)
    spec = RunSpec("grpo", 1.0, 0, preset)
    local = Run(spec, tmp_path / spec.run_name(), log=lambda *a: None).execute()
    summary_file = tmp_path / spec.run_name() / "summary.json"
    mtime = summary_file.stat().st_mtime
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        assert run_on_ray([spec], tmp_path) == {spec.run_name(): local}
        assert summary_file.stat().st_mtime == mtime          # finished: not run again
        # a run directory holding another config fails that run only, reported in one line
        other = RunSpec("grpo", 1.0, 0, with_overrides(preset, lr=1e-3))
        with pytest.raises(RunError) as info:
            run_on_ray([other], tmp_path)
        assert "1 of 1 runs failed" in str(info.value) and "different config" in str(info.value)
        assert "\n" not in str(info.value)
        assert ray.is_initialized()          # an instance it did not start is left running
    finally:
        ray.shutdown()
