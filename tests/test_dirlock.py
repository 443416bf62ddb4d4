"""One writer per directory (issue 17): two sweeps on one --out, two processes on one run
directory, and the lock a dead process leaves behind."""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trainer.dirlock import LOCK_NAME, DirLock, DirLocked
from trainer.loop import Run, RunError, RunSpec
from trainer.rundir import read_json, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def test_a_second_holder_is_refused_by_name_and_release_frees_the_directory(tmp_path):
    with DirLock(tmp_path, "sweep directory") as held:
        assert held.taken_over is None
        with pytest.raises(DirLocked) as info:
            DirLock(tmp_path, "sweep directory").acquire()
        message = str(info.value)
        assert "\n" not in message and f"sweep directory {tmp_path} is in use by " \
            f"pid {os.getpid()} on {socket.gethostname()} since " in message
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()
    with DirLock(tmp_path):
        pass


def test_the_lock_file_of_a_dead_holder_is_taken_over(tmp_path):
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os
        from trainer.dirlock import DirLock
        lock = DirLock({str(tmp_path)!r}).acquire()
        os._exit(0)                     # dies holding it: no release, the file stays
        """)], env=ENV, cwd=ROOT, timeout=120)
    assert child.returncode == 0
    left = json.loads((tmp_path / LOCK_NAME).read_text())
    assert left["pid"] != os.getpid()
    with DirLock(tmp_path) as lock:
        assert lock.taken_over == left
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()


def _holder(directory: Path) -> subprocess.Popen:
    """A live process holding ``directory``'s lock until killed."""
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from trainer.dirlock import DirLock
        lock = DirLock({str(directory)!r}, "run directory").acquire()
        print("held", flush=True)
        while True:             # until killed: a fixed sleep could end, and free the lock,
            time.sleep(60)      # before a starved test reaches its assertion
        """)], env=ENV, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_run_directory_in_use_by_a_live_process_is_refused_then_taken_over(smoke_preset,
                                                                             smoke_policy,
                                                                             tmp_path):
    run_dir = tmp_path / "grpo__b1__s0"
    holder = _holder(run_dir)
    try:
        with pytest.raises(RunError) as info:
            Run(RunSpec("grpo", 1.0, 0, smoke_preset), run_dir, log=lambda *a: None).execute()
        assert f"run directory {run_dir} is in use by pid {holder.pid} on " in str(info.value)
        assert "\n" not in str(info.value)
        assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME]   # nothing written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    summary = Run(RunSpec("grpo", 1.0, 0, smoke_preset), run_dir, log=lambda *a: None).execute()
    assert summary["steps"] == smoke_preset.steps
    assert not (run_dir / LOCK_NAME).exists()


def test_two_sweeps_started_together_on_one_out_one_trains_the_other_refuses(smoke_policy,
                                                                             tmp_path):
    out = tmp_path / "sweep"
    argv = [sys.executable, "-m", "bench.run", "--methods", "grpo", "--budgets", "1.0,0.5",
            "--preset", "smoke", "--executor", "serial", "--no-plots", "--out", str(out)]
    processes = [subprocess.Popen(argv, env=ENV, cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in processes]
    results = [(p.pid, p.returncode, *o) for p, o in zip(processes, outputs)]
    assert sorted(code for _, code, _, _ in results) == [0, 2], results
    (winner, _, out_text, _), = [r for r in results if r[1] == 0]
    (_, _, lost_out, lost_err), = [r for r in results if r[1] == 2]
    assert lost_out == "" and len(lost_err.strip().splitlines()) == 1, lost_err
    assert f"sweep directory {out} is in use by pid {winner} on {socket.gethostname()}" \
        in lost_err and lost_err.startswith("error: ")
    assert f"2 runs in {out}" in out_text
    # every run whole and trained once: one metrics line per step, in order, no stray temp files
    for name in ("grpo__b1__s0", "grpo__b0.5__s0"):
        run = out / name
        summary = read_json(run / "summary.json")
        assert summary["steps"] == 4
        assert [m["step"] for m in read_jsonl(run / "metrics.jsonl")] == [0, 1, 2, 3]
        assert [e["step"] for e in read_jsonl(run / "eval.jsonl")] == [0, 4]
        assert read_json(run / "config.json")["run"]["budget"] == float(name.split("__b")[1]
                                                                       .split("__")[0])
        assert not list(run.glob(".*.tmp")) and not (run / LOCK_NAME).exists()
    assert not (out / LOCK_NAME).exists()
