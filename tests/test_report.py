"""``python -m bench.report DIR``: byte-identical tables and CSVs, one-line errors on bad
directories; the local executor keeps finished runs when one run fails."""
import json
import shutil

from bench.report import SWEEP_FILE, build, main as report_main, update_sweep_file
from tests.test_tables import fake_sweep, write_run

TABLE_FILES = ("tables.md", "summary.csv")


def snapshot(sweep):
    """Bytes of tables.md and every CSV the tables write."""
    names = list(TABLE_FILES) + sorted(p.name for p in sweep.glob("*.csv"))
    return {name: (sweep / name).read_bytes() for name in names}


def test_report_reproduces_the_same_tables_and_csvs(tmp_path, capsys):
    sweep = fake_sweep(tmp_path / "sweep")
    for name in ("duet-fig1", "coba-table1", "pilot-commit-cost", "knapsack-effective"):
        update_sweep_file(sweep, table=name, target=0.35)
    first = build(sweep, with_plots=True)
    assert "Paper table `duet-fig1`" in first.text and "target accuracy 0.350" in first.text
    before = snapshot(sweep)
    assert "paper_duet-fig1_a.csv" in before and "table_cost.csv" in before
    assert {p.split("/")[-1] for p in first.plots} >= {"acc_vs_tokens.png",
                                                       "paper_knapsack-effective.png"}
    for name in before:
        (sweep / name).unlink()
    assert report_main([str(sweep), "--quiet"]) == 0
    assert snapshot(sweep) == before
    # a second report of an unchanged directory changes nothing either
    assert report_main([str(sweep), "--quiet", "--no-plots"]) == 0
    assert snapshot(sweep) == before
    # --target overrides the stored one for this report only
    assert report_main([str(sweep), "--target", "0.45", "--no-plots"]) == 0
    assert "target accuracy 0.450" in capsys.readouterr().out
    assert json.loads((sweep / SWEEP_FILE).read_text())["target"] == 0.35


def error_of(args, capsys):
    code = report_main(args)
    err = capsys.readouterr().err.strip()
    return code, err


def test_report_errors_are_one_line(tmp_path, capsys):
    code, err = error_of([str(tmp_path / "absent")], capsys)
    assert code == 2 and err.startswith("error: ") and "does not exist" in err
    assert len(err.splitlines()) == 1
    (tmp_path / "empty").mkdir()
    code, err = error_of([str(tmp_path / "empty")], capsys)
    assert code == 2 and "not a sweep directory" in err
    bad = tmp_path / "bad"
    run = write_run(bad, "grpo", 1.0, 0, final=0.3)
    (run / "summary.json").write_text("{not json")
    code, err = error_of([str(bad)], capsys)
    assert code == 2 and err.startswith("error: malformed run directory") and "summary.json" in err
    assert len(err.splitlines()) == 1
    shutil.rmtree(run)
    run = write_run(bad, "grpo", 1.0, 0, final=0.3)
    (run / "config.json").unlink()
    code, err = error_of([str(bad)], capsys)
    assert code == 2 and "config.json is missing" in err
    (run / "config.json").write_text(json.dumps({"run": {"method": "grpo"}}))
    code, err = error_of([str(bad)], capsys)
    assert code == 2 and "config.json lacks" in err
    (bad / SWEEP_FILE).write_text(json.dumps({"paper_tables": ["nope"]}))
    code, err = error_of([str(bad)], capsys)
    assert code == 2 and "unknown paper table" in err


def test_local_executor_reports_a_failed_run_and_keeps_the_others(tmp_path, capsys):
    from bench.run import main as run_main
    out = tmp_path / "sweep"
    broken = out / "grpo__b0.5__s0"
    broken.mkdir(parents=True)
    # a checkpoint of this run whose bytes do not match their checksum: the planner reads only
    # its record of what it belongs to (which matches), the worker verifies it and fails
    from bench.presets import get_preset, with_overrides
    from trainer.rundir import CHECKSUM_TAG, META_TAG
    from trainer.spec import RunSpec, checkpoint_meta
    spec = RunSpec("grpo", 0.5, 0, with_overrides(get_preset("smoke"), steps=1))
    (broken / "checkpoint.pt").write_bytes(
        b"not a checkpoint" + META_TAG + json.dumps(checkpoint_meta(spec, 0, [], [])).encode()
        + b"\n" + CHECKSUM_TAG + b"0" * 64 + b"\n")
    code = run_main(["--methods", "grpo", "--budgets", "1.0,0.5", "--preset", "smoke",
                     "--steps", "1", "--out", str(out), "--executor", "local", "--jobs", "2",
                     "--no-plots"])
    err = capsys.readouterr().err
    assert code == 2
    assert "error: grpo__b0.5__s0: checkpoint" in err and "is corrupt" in err
    assert (out / "grpo__b1__s0" / "summary.json").is_file()
    assert not (broken / "summary.json").exists()
    assert "grpo" in (out / "tables.md").read_text()
