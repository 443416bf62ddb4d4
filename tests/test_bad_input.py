"""Bad input that used to end in a traceback (issue 17): each is one line on stderr, a non-zero
exit and nothing trained -- checked before any run starts."""
import hashlib
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["--methods", "grpo", "--budgets", "1.0", "--preset", "smoke"]


def nothing_trained(root: Path) -> bool:
    return not root.exists() or not any(root.rglob("metrics.jsonl")) and \
        not any(root.rglob("config.json")) and not any(root.rglob("checkpoint.pt"))


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in captured.err and captured.out == ""
    return err[0]


def cli(argv, preexec_fn=None, prefix=()) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*prefix, sys.executable, "-m", "bench.run", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, preexec_fn=preexec_fn)


def assert_one_line_failure(result: subprocess.CompletedProcess) -> str:
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert result.stdout == ""
    return err[0]


@pytest.mark.parametrize("option, value", [("--methods", ""), ("--methods", " , "),
                                           ("--budgets", ""), ("--seeds", "")])
def test_an_empty_list_is_an_error_not_the_default(tmp_path, capsys, option, value):
    options = {"--methods": "grpo", "--budgets": "1.0", "--preset": "smoke",
               "--out": str(tmp_path / "o"), option: value}
    message = one_line_error(capsys, [a for pair in options.items() for a in pair])
    assert f"{option} is empty" in message
    assert nothing_trained(tmp_path / "o")


def test_out_naming_an_existing_file_is_refused_and_the_file_kept(tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("keep me\n")
    message = one_line_error(capsys, [*SMOKE, "--out", str(target)])
    assert "is a file, not a directory" in message and str(target) in message
    assert target.read_text() == "keep me\n"


def test_a_data_file_with_invalid_utf8_names_the_file_and_line(tmp_path, capsys):
    good = tmp_path / "good.jsonl"
    good.write_text('{"problem": "1+1?", "answer": "2"}\n')
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes('{"problem": "2+2?", "answer": "4"}\n'.encode() +
                    '{"problem": "caf\u00e9: 3+3?", "answer": "6"}\n'.encode("latin-1"))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"preset": {"train_data": str(good), "eval_data": [str(bad)]}}))
    message = one_line_error(capsys, [*SMOKE, "--config", str(config),
                                      "--out", str(tmp_path / "o")])
    assert f"{bad}:2: not UTF-8 text (byte 0xe9 at column 17)" in message, message
    assert nothing_trained(tmp_path / "o")


def test_a_config_file_with_invalid_utf8_is_a_one_line_error(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_bytes(b'{"preset": {"description": "caf\xe9"}}')
    assert "is not UTF-8 text" in one_line_error(capsys, [*SMOKE, "--config", str(config),
                                                          "--out", str(tmp_path / "o")])


def _without_root_privileges():
    """Root ignores file modes; a read-only directory only exists for root without the
    capabilities that override them (``setpriv`` drops them for the child)."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only directory cannot be made")
    return ("setpriv", "--inh-caps=-all",
            "--bounding-set=-dac_override,-dac_read_search,-fowner", "--")


@pytest.mark.parametrize("inside", [False, True])
def test_out_in_a_read_only_directory_is_a_one_line_error(tmp_path, inside):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    out = read_only / "sweep" if inside else read_only
    read_only.chmod(0o555)
    try:
        result = cli([*SMOKE, "--out", str(out)], prefix=_without_root_privileges())
    finally:
        read_only.chmod(0o755)
    message = assert_one_line_failure(result)
    assert f"cannot write the sweep directory {out}" in message and "Permission denied" in message
    assert nothing_trained(read_only) and list(read_only.iterdir()) == []


def _no_room_to_write():
    """Files in the child cannot grow past 64 bytes, so its first real write fails in the kernel
    (EFBIG: the closest to a full disk that needs no privileges; tempfile's 4-byte probe at
    start-up still passes)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)        # an error return, not a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))


def test_out_where_nothing_can_be_written_is_a_one_line_error(tmp_path):
    out = tmp_path / "sweep"
    message = assert_one_line_failure(cli([*SMOKE, "--out", str(out)],
                                          preexec_fn=_no_room_to_write))
    assert f"cannot write the sweep directory {out}" in message and "File too large" in message
    assert nothing_trained(out)


def test_a_full_disk_mid_sweep_fails_that_run_in_one_line_and_keeps_the_finished_one(
        tmp_path, capsys, monkeypatch):
    """Simulated (a real full disk cannot be made here): the second run's first checkpoint write
    fails with ENOSPC."""
    import errno

    import trainer.loop as loop
    real = loop.atomic_torch_save

    def full_for_the_second_run(path, obj, meta=None):
        if "b0.5" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, obj, meta)

    monkeypatch.setattr(loop, "atomic_torch_save", full_for_the_second_run)
    out = tmp_path / "o"
    assert main(["--methods", "grpo", "--budgets", "1.0,0.5", "--preset", "smoke",
                 "--executor", "serial", "--no-plots", "--out", str(out)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert err == [f"error: grpo__b0.5__s0: [Errno 28] No space left on device: "
                   f"'{out / 'grpo__b0.5__s0' / 'checkpoint.pt'}'"], err
    assert json.loads((out / "grpo__b1__s0" / "summary.json").read_text())["steps"] == 4
    assert not (out / "grpo__b0.5__s0" / "summary.json").exists()


# main() in a fresh interpreter, then which heavy libraries it had to load to say no (the method
# modules it imports to know the names bring scipy and pandas: allowed, they take a second)
MAIN_THEN_MODULES = """
import sys
from bench.run import main
code = main(sys.argv[1:])
print(repr((code, sorted({"torch", "transformers", "matplotlib"} & set(sys.modules)))))
"""


@pytest.mark.parametrize("option, value, says", [
    ("--budgets", "2", "budget fraction 2.0 is outside (0, 1]"),
    ("--seeds", "a", "--seeds must be comma-separated integers, got 'a'"),
    ("--methods", "nope", "unknown method 'nope'"),
    ("--preset", "nope", "unknown preset 'nope'"),
    ("--set", "foo", "--set 'foo': expected KEY=VALUE"),
])
def test_an_argument_error_is_told_before_torch_is_loaded(tmp_path, option, value, says):
    """Issue 18: a typo took the seconds torch needs to load before its one-line answer."""
    options = {**dict(zip(SMOKE[::2], SMOKE[1::2])), "--out": str(tmp_path / "o"), option: value}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", MAIN_THEN_MODULES,
                             *[a for pair in options.items() for a in pair]],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and says in err[0], result.stderr
    assert result.stdout.strip() == repr((2, []))
    assert nothing_trained(tmp_path / "o")


# ------------------------------------------------------------------------------ issue 29
# Each test below is one row of issue 29's table: an input that used to end silently wrong, in
# a traceback, or only inside a worker, now refused in one line before any work (or, for what
# only a run can see, stopped in one line).

@pytest.mark.parametrize("value, says", [
    ("preset.verifier_timeout=1e10", "preset.verifier_timeout = 10000000000.0: expected a "
                                     "number in (0, 3600]"),
    ("preset.verifier_timeout=Infinity", "preset.verifier_timeout = inf"),
    ("preset.lr=Infinity", "preset.lr = inf: expected a number in (0, 1]"),
    ("preset.lr=1e308", "preset.lr = 1e+308: expected a number in (0, 1]"),
    ("preset.temperature=Infinity", "preset.temperature = inf"),
    ("preset.prompts_per_step=100000", "preset.prompts_per_step = 100000: expected an integer "
                                       "in [1, 65536]"),
    ("preset.prompts_per_step=1000", "preset.prompts_per_step = 1000 is more than the 160 "
                                     "training prompts"),
    ("dapo.oversample=Infinity", "dapo.oversample = inf: expected a number > 0"),
])
def test_an_unbounded_or_infinite_number_is_refused_before_any_work(tmp_path, capsys, value,
                                                                    says):
    """Issue 29: these ran to exit 0 with accuracy 0.0, a diverged policy, uniform sampling, or
    a step of 100,000 prompts."""
    message = one_line_error(capsys, [*SMOKE, "--methods", value.split(".")[0].replace(
        "preset", "grpo"), "--set", value, "--out", str(tmp_path / "o")])
    assert says in message, message
    assert nothing_trained(tmp_path / "o")


def test_every_numeric_preset_field_declares_a_finite_upper_bound():
    """The bound is declared with the option (so --list shows it), not checked elsewhere."""
    import dataclasses
    import math
    import typing

    from core.options import _strip_none
    from trainer.config import Preset
    hints = typing.get_type_hints(Preset)
    unbounded = []
    for f in dataclasses.fields(Preset):
        base, _ = _strip_none(hints[f.name])
        if base in (int, float) and "help" in f.metadata:
            high = f.metadata["le"] if f.metadata["le"] is not None else f.metadata["lt"]
            if high is None or not math.isfinite(high):
                unbounded.append(f.name)
    assert unbounded == []


@pytest.mark.parametrize("argv, says", [
    (["--seeds", "-1"], "seed -1 is outside [0, 4294967295]"),
    (["--seeds", str(10 ** 23)], f"seed {10 ** 23} is outside"),
    (["--set", "preset.device=tpu"], "preset.device = 'tpu': expected cpu, cuda, cuda:N or mps"),
    (["--set", 'preset.engine_options={"max_batch_row": 8}'],
     "unknown option(s) max_batch_row of the hf engine"),
    (["--budgets", "1,0.99999999"], "both name the run directory grpo__b1__s0"),
    (["--set", "preset.pool_weights=[2,1]"], "pool_weights = [2, 1]: the chain_sum mix has 4 "
     "buckets"),
    (["--set", "preset.pool_weights=[0,0,0,0]"], "one weight >= 0 each, not all 0"),
])
def test_what_a_worker_used_to_catch_is_refused_by_the_planner(tmp_path, capsys, argv, says):
    """Issue 29: caught only inside a worker after 6-20 s, or (two budgets printing alike) one
    run trained and the other was refused by the lock."""
    options = {**dict(zip(SMOKE[::2], SMOKE[1::2])), "--out": str(tmp_path / "o")}
    options.update(dict(zip(argv[::2], argv[1::2])))
    message = one_line_error(capsys, [a for pair in options.items() for a in pair])
    assert says in message, message
    assert nothing_trained(tmp_path / "o")


def test_executor_ray_without_ray_is_refused_by_the_planner(tmp_path, capsys, monkeypatch):
    """Ray is installed here; ``sys.modules[name] = None`` is how Python spells "not
    installed" to the import system, so the planner sees what a machine without it shows."""
    monkeypatch.setitem(sys.modules, "ray", None)
    message = one_line_error(capsys, [*SMOKE, "--executor", "ray", "--out", str(tmp_path / "o")])
    assert "--executor ray needs Ray" in message


def test_a_method_named_twice_is_one_run(tmp_path):
    from bench.run import build_parser, plan_sweep
    args = build_parser().parse_args(["--methods", "grpo,grpo", "--budgets", "1",
                                      "--preset", "smoke", "--out", str(tmp_path / "o")])
    assert [s.run_name() for s in plan_sweep(args).specs] == ["grpo__b1__s0"]


def test_the_engine_options_known_to_the_planner_are_the_engines_keywords():
    import inspect

    from trainer.engine import HFEngine
    from trainer.spec import ENGINE_OPTIONS
    from trainer.vllm_engine import VLLMEngine
    # ``fast`` (HFEngine) switches the lean forward off for bench.engine and the tests; it is
    # deliberately no run option (the forward is chosen by what it can compute, trainer.fastlm)
    fixed = {"self", "model", "tokenizer", "model_dir", "max_new_tokens", "temperature", "top_p",
             "dtype", "seed", "fast"}
    for name, engine in (("hf", HFEngine), ("vllm", VLLMEngine)):
        keywords = set(inspect.signature(engine.__init__).parameters) - fixed
        assert set(ENGINE_OPTIONS[name]) == keywords, name


# --- resume checks what it resumes ----------------------------------------------------------

@pytest.fixture(scope="module")
def unfinished_smoke_run(tmp_path_factory):
    """A smoke run of 2 steps (its checkpoint is at step 2) with summary.json removed: the next
    command resumes it."""
    out = tmp_path_factory.mktemp("resume") / "sweep"
    assert main([*SMOKE, "--steps", "2", "--executor", "serial", "--no-plots",
                 "--out", str(out)]) == 0
    (out / "grpo__b1__s0" / "summary.json").unlink()
    return out


def _copy(source: Path, tmp_path: Path) -> Path:
    out = tmp_path / "sweep"
    shutil.copytree(source, out)
    return out


def _refused_resume(capsys, out: Path, *extra) -> str:
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    message = one_line_error(capsys, [*SMOKE, "--steps", "2", "--executor", "serial",
                                      "--no-plots", "--out", str(out), *extra])
    assert not (out / "grpo__b1__s0" / "summary.json").exists()
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before                      # refused before anything was touched
    return message


def test_resume_refuses_a_metrics_file_cut_short(unfinished_smoke_run, tmp_path, capsys):
    """Issue 29: metrics.jsonl cut to one line "finished" the run with "steps": 1."""
    out = _copy(unfinished_smoke_run, tmp_path)
    metrics = out / "grpo__b1__s0" / "metrics.jsonl"
    metrics.write_text(metrics.read_text().splitlines(keepends=True)[0])
    message = _refused_resume(capsys, out)
    assert f"{metrics} has 1 line(s) up to step 2 where checkpoint" in message, message


def test_resume_refuses_edited_metric_lines(unfinished_smoke_run, tmp_path, capsys):
    out = _copy(unfinished_smoke_run, tmp_path)
    metrics = out / "grpo__b1__s0" / "metrics.jsonl"
    metrics.write_text(metrics.read_text().replace('"step": 0', '"step": 0, "edited": 1', 1))
    assert f"{metrics} differs from the lines that checkpoint" in _refused_resume(capsys, out)


def test_resume_refuses_a_torn_metrics_file_naming_it(unfinished_smoke_run, tmp_path, capsys):
    """Issue 29: a bare JSONDecodeError without the file's name."""
    out = _copy(unfinished_smoke_run, tmp_path)
    metrics = out / "grpo__b1__s0" / "metrics.jsonl"
    metrics.write_bytes(metrics.read_bytes()[:-40])
    assert f"{metrics}:2: not valid JSON" in _refused_resume(capsys, out)


def test_resume_refuses_a_missing_eval_file_naming_it(unfinished_smoke_run, tmp_path, capsys):
    """Issue 29: a bare IndexError."""
    out = _copy(unfinished_smoke_run, tmp_path)
    (out / "grpo__b1__s0" / "eval.jsonl").unlink()
    message = _refused_resume(capsys, out)
    assert f"{out / 'grpo__b1__s0' / 'eval.jsonl'} has 0 line(s)" in message, message


def test_resume_under_another_config_after_config_json_was_deleted_is_refused(
        unfinished_smoke_run, tmp_path, capsys):
    """Issue 29: config.json recorded the new lr while every step had trained at the old."""
    out = _copy(unfinished_smoke_run, tmp_path)
    (out / "grpo__b1__s0" / "config.json").unlink()
    message = _refused_resume(capsys, out, "--set", "preset.lr=1e-4")
    assert f"checkpoint {out / 'grpo__b1__s0' / 'checkpoint.pt'} belongs to a run with " \
           f"another config" in message, message


def test_another_runs_checkpoint_copied_in_is_refused(unfinished_smoke_run, tmp_path, capsys):
    """Issue 29: accepted, and the run "finished" with 3 of 4 steps."""
    out = _copy(unfinished_smoke_run, tmp_path)
    other = out / "grpo__b1__s1"
    other.mkdir()
    shutil.copy(out / "grpo__b1__s0" / "checkpoint.pt", other / "checkpoint.pt")
    message = one_line_error(capsys, [*SMOKE, "--seeds", "1", "--steps", "2", "--out", str(out)])
    assert f"checkpoint {other / 'checkpoint.pt'} belongs to a run with another config" in \
        message
    assert sorted(p.name for p in other.iterdir()) == ["checkpoint.pt"]


def test_a_checkpoint_records_config_hash_step_and_metric_lines(unfinished_smoke_run):
    from trainer.rundir import read_checkpoint_meta, read_jsonl, records_digest
    run = unfinished_smoke_run / "grpo__b1__s0"
    meta = read_checkpoint_meta(run / "checkpoint.pt")
    metrics = read_jsonl(run / "metrics.jsonl")
    assert meta["step"] == 2 and meta["metric_lines"] == len(metrics) == 2
    assert meta["metrics_sha256"] == records_digest(metrics)
    config = json.loads((run / "config.json").read_text())["run"]
    assert meta["config_sha256"] == hashlib.sha256(json.dumps(config, sort_keys=True)
                                                   .encode()).hexdigest()


# --- other tools --------------------------------------------------------------------------

def test_calibrate_refuses_fewer_seeds_than_its_intervals_need(tmp_path, capsys):
    """Issue 29: four runs trained, then every interval criterion failed."""
    from bench.calibrate import main as calibrate
    assert calibrate(["--preset", "smoke", "--seeds", "0", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the gate's intervals need at least 2" in err[0], err
    assert nothing_trained(tmp_path / "o")


def test_warmstart_refuses_zero_samples(capsys):
    """Issue 29: it printed an accuracy of nan."""
    from bench.warmstart import main as warmstart
    assert warmstart(["--preset", "smoke", "--samples", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --samples must be at least 1, got 0"]


@pytest.mark.parametrize("target", ["2", "-5", "nan"])
def test_report_refuses_a_target_that_is_not_an_accuracy(tmp_path, capsys, target):
    from bench.report import main as report
    from bench.report import update_sweep_file
    update_sweep_file(tmp_path)
    assert report([str(tmp_path), "--target", target]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--target is an accuracy in [0, 1]" in err[0], err
    assert not (tmp_path / "tables.md").exists()


def test_report_on_a_read_only_directory_is_a_one_line_error(tmp_path):
    """Issue 29: an OSError traceback."""
    from bench.report import update_sweep_file
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    update_sweep_file(sweep)
    sweep.chmod(0o555)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    try:
        result = subprocess.run([*_without_root_privileges(), sys.executable, "-m", "bench.report",
                                 str(sweep), "--no-plots"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=300)
    finally:
        sweep.chmod(0o755)
    message = assert_one_line_failure(result)
    assert f"cannot write the sweep directory {sweep}" in message
    assert "Permission denied" in message and not (sweep / "tables.md").exists()


def test_report_refuses_a_sweep_directory_another_process_holds(tmp_path, capsys):
    """Issue 29: it wrote tables.md into a directory whose sweep was still running."""
    from bench.report import main as report
    from bench.report import update_sweep_file
    from trainer.dirlock import DirLock
    update_sweep_file(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(tmp_path)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        assert report([str(tmp_path), "--no-plots"]) == 2
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"error: sweep directory {tmp_path} is in use by" in err[0], err
    assert not (tmp_path / "tables.md").exists()
    with DirLock(tmp_path, "sweep directory"):     # the holder's death freed it
        pass


HOLD_THE_LOCK = """
import sys, time
from trainer.dirlock import DirLock
with DirLock(sys.argv[1], "sweep directory"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_config_nested_100000_deep_is_a_one_line_error(tmp_path, capsys):
    """Issue 29: RecursionError."""
    config = tmp_path / "deep.json"
    config.write_text('{"preset": ' + "[" * 100_000 + "]" * 100_000 + "}")
    message = one_line_error(capsys, [*SMOKE, "--config", str(config),
                                      "--out", str(tmp_path / "o")])
    assert "nests too deeply" in message and str(config) in message


@pytest.mark.parametrize("argv, says", [
    (["--samples", "0"], "--samples must be in [1, 1024], got 0"),
    (["--limit", "0"], "--limit must be at least 1, got 0"),
    (["--max-new-tokens", "-3"], "--max-new-tokens must be in [1, 131072], got -3"),
    (["--batch-size", "0"], "--batch-size must be in [1, 65536], got 0"),
    (["--device", "tpu"], "--device 'tpu': expected cpu, cuda, cuda:N or mps"),
])
def test_bench_eval_checks_its_values_before_saying_lm_eval_is_missing(tmp_path, capsys,
                                                                       monkeypatch, argv, says):
    """``sys.modules["lm_eval"] = None``: what a machine without lm-eval shows the import
    system (it is installed here)."""
    from bench.eval import main as evaluate
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    assert evaluate([str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {says}"], err


def test_bench_eval_says_lm_eval_is_missing_before_building_anything(tmp_path, capsys,
                                                                     monkeypatch):
    from bench.eval import main as evaluate
    from bench.presets import get_preset
    (tmp_path / "config.json").write_text(json.dumps(
        {"run": {"method": "grpo", "preset": get_preset("smoke").to_dict()}}))
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    import bench.eval
    monkeypatch.setattr(bench.eval, "policy_dir", lambda *a: pytest.fail("policy built"))
    assert evaluate([str(tmp_path)]) == 2
    assert "lm-eval is not installed" in capsys.readouterr().err


# --- data files ----------------------------------------------------------------------------

def _math_file(path: Path, problems: list[str]) -> Path:
    path.write_text("".join(json.dumps({"problem": p, "answer": "2"}) + "\n" for p in problems))
    return path


def test_a_30_mb_record_is_refused_naming_file_and_line(tmp_path, capsys):
    """Issue 29: it passed the check, then a worker grew to ~24 GB and the kernel killed it.
    The file is 30 MB on the test's temporary disk, read once."""
    train = _math_file(tmp_path / "train.jsonl", ["1+1?"] * 3)
    held = tmp_path / "held.jsonl"
    with held.open("w") as handle:
        handle.write(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
        handle.write(json.dumps({"problem": "x" * 30_000_000, "answer": "2"}) + "\n")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"preset": {"train_data": str(train),
                                             "eval_data": [str(held)],
                                             "prompts_per_step": 2, "group_size": 2}}))
    message = one_line_error(capsys, [*SMOKE, "--config", str(config),
                                      "--out", str(tmp_path / "o")])
    assert f"{held}:2: a record of 30,000,031 bytes; at most 1,048,576" in message, message


def test_a_prompt_longer_than_the_models_context_is_refused_naming_file_and_line(
        smoke_policy, tmp_path, capsys):
    """The smoke policy as a model directory: 256 positions, 40 of them for the response."""
    from bench.presets import get_preset
    from trainer.sft import ensure_warm_start
    model_dir = ensure_warm_start(get_preset("smoke").warm_start, progress=False,
                                  log=lambda *a: None)
    train = _math_file(tmp_path / "train.jsonl", ["1+1?"] * 3)
    held = _math_file(tmp_path / "held.jsonl", ["1+1?", "1+1? " * 200, "1+1?"])
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"preset": {
        "model_dir": str(model_dir), "train_data": str(train), "eval_data": [str(held)],
        "prompts_per_step": 2, "group_size": 2}}))
    message = one_line_error(capsys, [*SMOKE, "--config", str(config),
                                      "--out", str(tmp_path / "o")])
    assert f"{held}:2: a prompt of" in message and "at most 216 fit" in message, message


def test_a_bad_data_file_is_one_line_without_math_verify_notices(tmp_path):
    """Issue 29: math-verify's "Timeout is disabled" warnings printed before the error (a
    fresh interpreter: the notice is printed once per process)."""
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n"
                     + json.dumps({"problem": "2+2?", "answer": ""}) + "\n")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"preset": {"train_data": str(train),
                                             "eval_data": [str(train)]}}))
    message = assert_one_line_failure(cli([*SMOKE, "--config", str(config),
                                           "--out", str(tmp_path / "o")]))
    assert f"{train}:2: field 'answer' is empty" in message


# --- a full disk during a checkpoint write ---------------------------------------------------

def test_a_checkpoint_write_refused_with_enospc_at_os_write_says_so_and_where(tmp_path,
                                                                              monkeypatch):
    """os.write, the system call torch's bytes go through, patched to fail as a full disk
    does (ENOSPC) once 4 kB are written: torch alone said "unexpected pos 24512 vs 24406"."""
    import errno

    import torch

    from trainer import rundir
    real = os.write

    def full(fd, data):
        if os.fstat(fd).st_size > 4096:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(rundir.os, "write", full)
    target = tmp_path / "checkpoint.pt"
    with pytest.raises(OSError) as info:
        rundir.atomic_torch_save(target, {"w": torch.zeros(100_000)})
    assert str(info.value) == f"[Errno 28] No space left on device: '{target}'"
    assert list(tmp_path.iterdir()) == []


SAVE_UNDER_A_SIZE_LIMIT = """
import resource, signal, sys, torch
from trainer.rundir import atomic_torch_save
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
try:
    atomic_torch_save(sys.argv[1], {"w": torch.zeros(1_000_000)})
except OSError as exc:
    print(exc)
"""


def test_a_checkpoint_write_the_kernel_refuses_at_a_file_size_limit_says_so_and_where(tmp_path):
    """RLIMIT_FSIZE in a child: the kernel refuses the write past 64 kB (EFBIG), the same
    path through the OS as a full disk without filling one."""
    target = tmp_path / "checkpoint.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", SAVE_UNDER_A_SIZE_LIMIT, str(target)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.stdout.strip() == f"[Errno 27] File too large: '{target}'", result
    assert list(tmp_path.iterdir()) == []


# --- what the run itself sees -----------------------------------------------------------------

def test_a_run_whose_verifier_fails_on_most_items_stops_in_one_line(smoke_preset, tmp_path,
                                                                    monkeypatch):
    """A real pool with a scorer that fails on every item (tests/hostile_scorers.broken), as a
    verifier_timeout that overflowed the timer did: accuracy 0.0, exit 0, no warning."""
    from dataclasses import replace

    import trainer.loop as loop
    real = loop.build_splits

    def broken_scorer(*args, **kwargs):
        train, held = real(*args, **kwargs)
        return train, [replace(t, scorer="tests.hostile_scorers:broken") for t in held]

    monkeypatch.setattr(loop, "build_splits", broken_scorer)
    run = loop.Run(loop.RunSpec("grpo", 1.0, 0, replace(smoke_preset, steps=1)), tmp_path / "r",
                   log=lambda *a: None)
    with pytest.raises(loop.RunError) as info:
        run.execute()
    message = str(info.value)
    assert "the verifier failed on 32 of 32 items (0 timeouts, 32 errors), more than 50%" in \
        message and "\n" not in message
    assert not (tmp_path / "r" / "summary.json").exists()


def test_a_verifier_failing_on_half_the_items_or_fewer_goes_on(tmp_path):
    from trainer.loop import CheckedVerifier, RunError
    from trainer.verifier import VerifierPool
    checked = CheckedVerifier(VerifierPool(1, 5.0), 5.0)
    try:
        half = [("tests.hostile_scorers:crashy", "raise" if i % 2 else "1", {"answer": "1"})
                for i in range(16)]
        assert checked.score(half).failures == 8
        with pytest.raises(RunError, match="failed on 9 of 17 items"):
            checked.score(half + [("tests.hostile_scorers:crashy", "raise", {"answer": "1"})])
    finally:
        checked.close()


def test_a_diverged_loss_stops_the_run_in_one_line(smoke_preset, tmp_path, monkeypatch):
    """Issue 29: lr = Infinity diverged after step 0 with nan_skipped 0 and exit 0; a loss that
    stays non-finite now stops the run (a single non-finite step is still skipped, as
    tests/test_runner.py checks)."""
    import torch

    import trainer.loop as loop
    real = loop.policy_loss

    def always_nan(*args, **kwargs):
        loss, stats = real(*args, **kwargs)
        return loss * torch.tensor(float("nan")), stats

    monkeypatch.setattr(loop, "policy_loss", always_nan)
    run = loop.Run(loop.RunSpec("grpo", 1.0, 0, smoke_preset), tmp_path / "r",
                   log=lambda *a: None)
    with pytest.raises(loop.RunError) as info:
        run.execute()
    assert str(info.value).startswith("step 2: the loss or gradient was not finite in 3 "
                                      "optimizer steps in a row")
    assert not (tmp_path / "r" / "summary.json").exists()


# --- what the user sees ---------------------------------------------------------------------

def test_the_eta_after_a_resume_does_not_count_the_skipped_steps():
    """A clock the test moves: one run trains 1 step per 10 s, then another resumes at step 8
    of 10; the rate stays 0.1 step/s (it was (1 + 9) / 20 = 0.5, twice too optimistic and
    more)."""
    from bench.executors import SweepProgress
    from bench.presets import get_preset
    from trainer.spec import RunSpec
    preset = replace_steps(get_preset("smoke"), 10)
    progress = SweepProgress([RunSpec("grpo", 1.0, 0, preset), RunSpec("grpo", 1.0, 1, preset)],
                             file=io.StringIO())
    now = [0.0]
    progress.bar._time = lambda: now[0]
    progress.set_steps("grpo__b1__s0", 1)
    now[0] = 10.0
    progress.set_steps("grpo__b1__s0", 2)
    now[0] = 20.0
    progress.set_steps("grpo__b1__s1", 9)        # resumed at step 8: one step trained
    assert progress.bar.format_dict["rate"] == pytest.approx(2 / 20)
    progress.close()


def replace_steps(preset, steps):
    from dataclasses import replace
    return replace(preset, steps=steps)


def _sweep_until(tmp_path, line_start: str) -> tuple[subprocess.Popen, list[str]]:
    """``bench.run`` on the smoke preset, its stdout (where the progress bar's messages go)
    read until a line starts with ``line_start`` (the lines up to it returned)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "bench.run", *SMOKE, "--executor",
                                "serial", "--no-plots", "--out", str(tmp_path / "o")],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if any(part.lstrip().startswith(line_start) for part in line.split("\r")):
            return process, lines
    process.wait()
    pytest.fail(f"no line starting {line_start!r}: {''.join(lines)}")


def test_the_step0_evaluation_says_what_it_is_doing(smoke_policy, tmp_path):
    """Issue 29: ~30 s with nothing on screen before the first step."""
    process, lines = _sweep_until(tmp_path, "grpo__b1__s0: evaluating the initial policy")
    process.kill()
    process.wait()
    assert "16 held-out prompts x 2 samples (step 0)" in lines[-1]
    assert not (tmp_path / "o" / "grpo__b1__s0" / "metrics.jsonl").exists()  # before step 1


def test_sigterm_says_what_ctrl_c_says(smoke_policy, tmp_path):
    """Issue 29: SIGTERM exited silently."""
    process, _ = _sweep_until(tmp_path, "grpo__b1__s0: evaluating the initial policy")
    process.send_signal(signal.SIGTERM)
    rest = process.stderr.read()
    assert process.wait(timeout=120) == 130
    assert rest.strip().splitlines()[-1] == ("interrupted: finished runs are kept; re-run the "
                                             "same command to resume")
