"""The engine benchmark's command on the smoke policy: every row printed, and the DUET row
generating no more tokens than the bare engine on the same rollouts (its controller can only
end a row early, never extend it)."""
import re

from bench import engine as bench_engine


def test_engine_benchmark_rows_and_the_controller_never_adds_tokens(smoke_policy, capsys):
    assert bench_engine.main(["--preset", "smoke", "--prompts", "4", "--samples", "4",
                              "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for row in ("hf engine", "+ DUET stop rule", "model.generate", "DUET controller cost"):
        assert row in out
    controlled, bare = (int(v.replace(",", "")) for v in
                        re.search(r"\(([\d,]+) tokens generated vs ([\d,]+) without it\)",
                                  out).groups())
    assert 0 < controlled <= bare


def test_engine_benchmark_rejects_bad_counts(capsys):
    assert bench_engine.main(["--preset", "smoke", "--repeats", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
