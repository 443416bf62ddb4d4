"""The engine benchmark's command runs end to end on the smoke policy and prints its rows."""
from bench import engine as bench_engine


def test_engine_benchmark_prints_every_row(smoke_policy, capsys):
    assert bench_engine.main(["--preset", "smoke", "--prompts", "2", "--samples", "2",
                              "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for row in ("hf engine", "+ DUET stop rule", "model.generate", "DUET controller cost"):
        assert row in out


def test_engine_benchmark_rejects_bad_counts(capsys):
    assert bench_engine.main(["--preset", "smoke", "--repeats", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
