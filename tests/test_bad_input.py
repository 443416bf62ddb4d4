"""Bad input that used to end in a traceback (issue 17): each is one line on stderr, a non-zero
exit and nothing trained -- checked before any run starts."""
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

    def full_for_the_second_run(path, obj):
        if "b0.5" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, obj)

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
