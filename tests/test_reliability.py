"""Ways a run could report a wrong number without saying so: corrupt checkpoints, stale temp
files, a cache shared across test sessions, orphaned workers, irreproducible configs."""
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from trainer.loop import Run, RunError, RunSpec
from trainer.rundir import read_json


def _run(preset, out: Path, **kwargs):
    return Run(RunSpec("grpo", 1.0, 0, preset), out, log=lambda *a: None, **kwargs).execute()


def _flip_inside_largest_tensor(checkpoint: Path, count: int = 64) -> None:
    with zipfile.ZipFile(checkpoint) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename),
                   key=lambda i: i.file_size)
    data = bytearray(checkpoint.read_bytes())
    # the local header: 30 bytes + name + extra field, then the (stored, uncompressed) tensor
    name_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    data[start:start + count] = bytes(b ^ 0xFF for b in data[start:start + count])
    checkpoint.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def finished_smoke_run(smoke_preset, tmp_path_factory):
    preset = replace(smoke_preset, steps=2)
    out = tmp_path_factory.mktemp("finished") / "run"
    summary = _run(preset, out)
    return preset, out, summary


def test_a_checkpoint_with_flipped_bytes_in_a_tensor_is_refused_in_one_line(finished_smoke_run,
                                                                             tmp_path):
    import shutil
    preset, finished, _ = finished_smoke_run
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / "summary.json").unlink()             # unfinished: the next execute resumes
    _flip_inside_largest_tensor(out / "checkpoint.pt")
    with pytest.raises(RunError) as info:
        _run(preset, out)
    message = str(info.value)
    assert "corrupt" in message and "checkpoint.pt" in message and "\n" not in message
    assert not (out / "summary.json").exists()


def _eval_refuses(run_dir: Path, capsys) -> str:
    """``python -m bench.eval RUN_DIR`` exits 2 with one line and writes nothing."""
    from bench.eval import main
    assert main([str(run_dir)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in captured.err
    assert not (run_dir / "lm_eval.json").exists()
    return err[0]


def test_eval_refuses_a_checkpoint_with_flipped_bytes_in_a_tensor(finished_smoke_run, tmp_path,
                                                                   capsys):
    import shutil
    _, finished, _ = finished_smoke_run
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    shutil.rmtree(out / "policy")               # as a run from before the loop saved it
    _flip_inside_largest_tensor(out / "checkpoint.pt")
    message = _eval_refuses(out, capsys)
    assert "corrupt" in message and "checkpoint.pt" in message
    assert not (out / "policy").exists()        # nothing rebuilt from the bad bytes


def test_eval_refuses_a_saved_policy_whose_weights_changed(finished_smoke_run, tmp_path, capsys):
    import shutil

    from trainer.policy import verify_policy
    _, finished, _ = finished_smoke_run
    verify_policy(finished / "policy")          # as training saved it: passes
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    weights = out / "policy" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    middle = len(data) // 2                     # past the header: inside a tensor
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    weights.write_bytes(bytes(data))
    message = _eval_refuses(out, capsys)
    assert "corrupt" in message and str(out / "policy") in message


def test_a_truncated_checkpoint_is_refused_in_one_line(finished_smoke_run, tmp_path):
    import shutil
    preset, finished, _ = finished_smoke_run
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / "summary.json").unlink()
    data = (out / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(data[:len(data) // 2])
    with pytest.raises(RunError, match="no checksum"):
        _run(preset, out)


def test_resume_removes_temp_files_a_killed_write_left(finished_smoke_run, tmp_path):
    import shutil
    preset, finished, summary = finished_smoke_run
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / "summary.json").unlink()
    stale = [out / ".checkpoint.pt.k1ll3d.tmp", out / ".metrics.jsonl.x2y3z4.tmp"]
    for path in stale:
        path.write_bytes(b"half a write")
    resumed = _run(preset, out)
    assert not any(path.exists() for path in stale)
    assert resumed["final_accuracy"] == summary["final_accuracy"]
    assert resumed["tokens"] == summary["tokens"]


@pytest.mark.skipif("ALLOCBENCH_TEST_CACHE" in __import__("os").environ,
                    reason="ALLOCBENCH_TEST_CACHE asks for a reused cache")
def test_each_test_session_has_its_own_cache(tmp_path_factory):
    from trainer.cache import cache_root
    assert cache_root().resolve().is_relative_to(tmp_path_factory.getbasetemp().resolve())


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="Linux /proc")
def test_killing_the_coordinator_ends_its_workers_and_no_summary_appears(smoke_policy, tmp_path):
    """A real sweep in real processes: SIGKILL of bench.run alone; its worker (and the worker's
    verifier pool) must be gone within a few seconds, and the run must not finish after."""
    import os
    import signal
    import subprocess
    import sys
    import time

    psutil = pytest.importorskip("psutil")
    out = tmp_path / "sweep"
    coordinator = subprocess.Popen(
        [sys.executable, "-m", "bench.run", "--preset", "smoke", "--methods", "grpo",
         "--budgets", "1", "--steps", "400", "--no-plots",
         "--out", str(out)], cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = out / "grpo__b1__s0" / "metrics.jsonl"
    descendants = []
    try:
        deadline = time.monotonic() + 300
        while not metrics.is_file():               # the worker is training
            assert coordinator.poll() is None and time.monotonic() < deadline
            time.sleep(0.5)
        descendants = psutil.Process(coordinator.pid).children(recursive=True)
        assert descendants
        coordinator.send_signal(signal.SIGKILL)
        coordinator.wait()
        gone, alive = psutil.wait_procs(descendants, timeout=10)
        assert not alive, [p.cmdline()[:3] for p in alive]
        time.sleep(3)
        assert not (out / "grpo__b1__s0" / "summary.json").exists()
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
        for process in descendants:               # only what this test started
            with __import__("contextlib").suppress(psutil.Error):
                process.kill()


def test_config_json_records_versions_threads_and_the_warm_start_hash(finished_smoke_run):
    from trainer.provenance import weights_sha256
    from trainer.sft import warm_start_dir
    preset, out, _ = finished_smoke_run
    config = read_json(out / "config.json")
    env = config["environment"]
    assert env["torch_threads"] == preset.threads
    for package in ("torch", "transformers", "reasoning-gym", "numpy"):
        assert env[package] == __import__("importlib.metadata").metadata.version(package)
    assert config["warm_start_sha256"] == weights_sha256(warm_start_dir(preset.warm_start))


def test_a_warm_start_whose_weights_changed_is_refused(smoke_policy, smoke_preset, tmp_path,
                                                       monkeypatch):
    import shutil
    from trainer.policy import PolicyLoadError
    from trainer.sft import ensure_warm_start, warm_start_dir
    source = warm_start_dir(smoke_preset.warm_start)
    monkeypatch.setenv("ALLOCBENCH_CACHE", str(tmp_path))
    copy = warm_start_dir(smoke_preset.warm_start)
    shutil.copytree(source, copy)
    assert ensure_warm_start(smoke_preset.warm_start, progress=False) == copy
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-200:-136] = bytes(b ^ 0xFF for b in data[-200:-136])
    weights.write_bytes(bytes(data))
    with pytest.raises(PolicyLoadError, match="not the .* it was built with"):
        ensure_warm_start(smoke_preset.warm_start, progress=False)


def test_a_rebuild_reports_whether_it_gave_the_same_weights(tmp_path, monkeypatch):
    import shutil
    from bench.presets import get_preset
    from trainer.sft import ensure_warm_start, warm_start_hash
    monkeypatch.setenv("ALLOCBENCH_CACHE", str(tmp_path))
    cfg = replace(get_preset("smoke").warm_start, steps=3, examples_per_bucket=16,
                  train_per_bucket=8, eval_per_bucket=2)
    first = ensure_warm_start(cfg, progress=False, log=lambda *a: None)
    digest = warm_start_hash(first)
    for previous, expected in ((digest, "identical"), ("0" * 64, "differs")):
        shutil.rmtree(first)
        said = []
        ensure_warm_start(cfg, progress=False, log=said.append, previous_hash=previous)
        assert any(expected in line for line in said), said
        assert warm_start_hash(first) == digest     # same config, seed, threads: same weights


def test_repeated_budgets_and_seeds_make_one_run(tmp_path):
    from bench.run import build_parser, plan_sweep
    args = build_parser().parse_args(["--preset", "smoke", "--methods", "grpo", "--budgets",
                                      "1,1.0", "--seeds", "0,0", "--out", str(tmp_path)])
    assert [s.run_name() for s in plan_sweep(args).specs] == ["grpo__b1__s0"]


def test_a_corrupt_summary_is_warned_about_and_the_run_finished_again(finished_smoke_run,
                                                                      tmp_path, capsys):
    import shutil
    from bench.run import main
    preset, finished, summary = finished_smoke_run
    out = tmp_path / "sweep"
    shutil.copytree(finished, out / "grpo__b1__s0")
    (out / "grpo__b1__s0" / "summary.json").write_text('{"method": "grpo", "final_acc')
    rc = main(["--preset", "smoke", "--steps", str(preset.steps), "--methods", "grpo",
               "--budgets", "1", "--seeds", "0", "--no-plots", "--executor", "serial",
               "--out", str(out)])
    said = capsys.readouterr()
    said = said.out + said.err
    assert rc == 0 and "summary.json was unreadable" in said and "Traceback" not in said
    again = read_json(out / "grpo__b1__s0" / "summary.json")
    assert again["final_accuracy"] == summary["final_accuracy"]
    assert (out / "grpo__b1__s0" / "summary.json.corrupt").is_file()


@pytest.mark.parametrize("threads", [1, 2])
def test_a_run_limits_numpys_blas_threads_to_the_presets(smoke_preset, tmp_path, monkeypatch,
                                                         threads):
    from threadpoolctl import threadpool_info
    seen = []

    def record(self):
        seen.append({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"})
        return {}

    monkeypatch.setattr(Run, "_execute", record)
    Run(RunSpec("grpo", 1.0, 0, replace(smoke_preset, threads=threads)), tmp_path / "r",
        log=lambda *a: None).execute()
    # numpy's and scipy's OpenBLAS are held at `threads`; a single-threaded build (SCS's,
    # loaded once cvxpy is) reports 1 whatever the limit
    (counts,) = seen
    assert max(counts) == threads and all(n <= threads for n in counts)
