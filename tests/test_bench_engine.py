"""The engine benchmark's command on the smoke policy: every row and ratio printed, the DUET row
generating no more tokens than the bare engine on the same rollouts (its controller can only
end a row early, never extend it), the same rule with its decisions dropped generating exactly
the bare engine's tokens, and the synthetic cut removing the share of tokens it names."""
import re

import numpy as np

from bench import engine as bench_engine
from bench.engine import CutAt, _CutBatch
from lengthctl.base import TokenText


def test_engine_benchmark_rows_and_ratios(smoke_policy, capsys):
    assert bench_engine.main(["--preset", "smoke", "--prompts", "4", "--samples", "4",
                              "--repeats", "1", "--cut", "0.5"]) == 0
    out = capsys.readouterr().out
    for row in ("hf engine", "+ DUET, decisions dropped", "+ DUET stop rule", "+ cut at 0.5", "model.generate",
                "forward only (limit)", "hf engine, transformers fwd", "its weight matmuls only",
                "the matmul floor", "engine / model.generate:", "DUET controller cost",
                "time saved per token saved:"):
        assert row in out
    controlled, bare = (int(v.replace(",", "")) for v in
                        re.search(r"\(([\d,]+) tokens generated vs ([\d,]+) without it\)",
                                  out).groups())
    assert 0 < controlled <= bare
    # with its decisions dropped the rule cannot change a token: the bare engine's count
    dropped = int(re.search(r"\+ DUET, decisions dropped\s+[\d,]+\s+([\d,]+)", out).group(1)
                  .replace(",", ""))
    assert dropped == bare
    share = re.search(r"DUET controller cost per token: \+([\d.]+)% \(its calls timed inside", out)
    assert share and 0.0 < float(share.group(1)) < 100.0
    cut = int(re.search(r"\+ cut at 0.5\s+[\d,]+\s+([\d,]+)", out).group(1).replace(",", ""))
    # each row keeps floor(n / 2) sampled tokens plus its forced EOS
    assert 0.45 * bare <= cut <= 0.5 * bare + 16


def test_cut_rule_batch_equals_its_rows():
    text = TokenText(["a"], lambda ids: "")
    rows = [CutAt(3), CutAt(5), CutAt(0)]
    batch = CutAt.batch(rows, text)
    assert isinstance(batch, _CutBatch) and batch.next_position() == 0
    codes = batch.decide(np.arange(3), np.full(3, 3), np.zeros((3, 3), dtype=np.int64), None)
    assert codes.tolist() == [1, 0, 1]
    assert [r.decide(3, 0.0, None) for r in rows] == ["stopped", None, None]


def test_engine_benchmark_rejects_bad_counts(capsys):
    assert bench_engine.main(["--preset", "smoke", "--repeats", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert bench_engine.main(["--preset", "smoke", "--cut", "1.5"]) == 2
