"""The allocator overhead benchmark: table shape, cell contents, the DP skip rule, the CLI."""
from __future__ import annotations

import pandas as pd
import pytest

import allocators
from bench import overhead
from bench.overhead import MISSING, RATIO_ROWS, overhead_table

OWN_ROWS = ["Knapsack-RL greedy (default)", "Knapsack-RL DP (released code's solver)",
            "CoBA-RL vectorised (default)", "CoBA-RL heap (Algorithm 1)",
            "CoBA-RL DP (Table 4 contrast)", "plan(): knapsack", "plan(): coba"]


def is_cell(value) -> bool:
    return value == MISSING or (isinstance(value, float) and value > 0.0)


@pytest.fixture(scope="module")
def table():
    return overhead_table([8, 16], 2)


def test_shape_and_labels(table):
    """Solvers first (the four families of Table 4's contrast), then one plan() row per
    registered method in registry order, then the ratio rows, each label once."""
    assert list(table.columns) == ["M=8, C=128", "M=16, C=256"]
    labels = list(table.index)
    assert len(labels) == len(set(labels))
    plans = [label for label in labels if label.startswith("plan(): ")]
    assert plans == [f"plan(): {name}" for name in allocators.available()]
    first, last = labels.index(plans[0]), labels.index(plans[-1])
    assert labels[first:last + 1] == plans
    assert {label.split(" ")[0] for label in labels[:first]} == {"Knapsack-RL", "CoBA-RL",
                                                                 "VIP", "DUET"}
    ratios = labels[last + 1:]
    assert ratios and all(label.endswith("(x)") for label in ratios)


def test_every_cell_is_a_positive_time_or_the_marker(table):
    for label, row in table.iterrows():
        for value in row:
            assert is_cell(value), (label, value)
    for label in OWN_ROWS:
        assert all(isinstance(v, float) for v in table.loc[label]), label


def test_ratio_rows_divide_reference_by_default(table):
    for label, numerator, denominator in RATIO_ROWS:
        for column in table.columns:
            top, bottom = table.loc[numerator, column], table.loc[denominator, column]
            if isinstance(top, float) and isinstance(bottom, float):
                assert table.loc[label, column] == pytest.approx(top / bottom)
            else:
                assert table.loc[label, column] == MISSING


def test_missing_cells_are_explained(table):
    missing = sum(v == MISSING for label, row in table.iterrows()
                  if not label.endswith("(x)") for v in row)
    assert (missing == 0) == (not table.attrs["notes"])


def test_dp_beyond_the_work_limit_is_not_measured():
    small = overhead_table([8], 1, dp_max_work=1.0, include_plans=False)
    assert small.loc["CoBA-RL DP (Table 4 contrast)", "M=8, C=128"] == MISSING
    assert small.loc["Knapsack-RL DP (released code's solver)", "M=8, C=128"] == MISSING
    assert small.loc["CoBA-RL DP / heap (x)", "M=8, C=128"] == MISSING
    assert isinstance(small.loc["CoBA-RL heap (Algorithm 1)", "M=8, C=128"], float)
    assert any("CoBA DP skipped" in note for note in small.attrs["notes"])


def test_a_failing_plan_becomes_a_marker_not_a_crash():
    with pytest.raises(overhead.Unavailable, match="no-such-method"):
        overhead.plan_case("no-such-method")(overhead.make_instance(8, 128))


def test_cli_writes_markdown_and_csv(tmp_path, capsys):
    out = tmp_path / "overhead.md"
    assert overhead.main(["--sizes", "8", "--repeats", "1", "--solvers-only", "--out",
                          str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| Solver | M=8, C=128 |" in printed and "Summary at M=8, C=128" in printed
    assert out.read_text().startswith("| Solver |")
    csv = pd.read_csv(tmp_path / "overhead.csv", index_col="solver")
    assert "CoBA-RL heap (Algorithm 1)" in csv.index and list(csv.columns) == ["M=8, C=128"]
