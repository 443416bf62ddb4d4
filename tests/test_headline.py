"""The headline table (bench.headline) on constructed runs whose numbers are known in advance, and
``bench.report --readme`` pasting it between a README's markers."""
import numpy as np
import pytest

from bench import headline, report
from bench.tables import SweepError, load_summaries
from tests.test_tables import T975, write_run

GRPO_FINAL = 0.4


def _sweep(tmp_path):
    """grpo, knapsack and duet at b = 1 and 0.5, three seeds; the oracle at b = 0.5 only.

    Evaluations at steps 0, 2, 4 with the middle one halfway from 0.2, so the curve average is
    (0.2 + 3 final) / 4 and a Δ of finals is 3/4 of it on the curve."""
    finals = {"grpo": [GRPO_FINAL] * 3, "knapsack": [0.44, 0.48, 0.44],
              "duet": [0.36, 0.36, 0.32], "oracle": [0.48, 0.48, 0.52]}
    tokens = {"grpo": 1000, "knapsack": 1500, "duet": 3000, "oracle": 900}
    for method, values in finals.items():
        for budget in ((0.5,) if method == "oracle" else (1.0, 0.5)):
            for seed, final in enumerate(values):
                write_run(tmp_path, method, budget, seed, final=final,
                          curve=[0.2, (0.2 + final) / 2, final],
                          tokens_per_step=int(tokens[method] * budget) + seed)
    return tmp_path


def test_headline_rows_order_deltas_and_token_ratios(tmp_path):
    table = headline.headline_table(load_summaries(_sweep(tmp_path)))
    rows = table.display.set_index("method")
    assert list(rows.index) == ["grpo (curve average)", "oracle (control)", "knapsack", "duet"]
    grpo_curve = (0.2 + 3 * GRPO_FINAL) / 4
    assert rows.loc["grpo (curve average)", "b=1"] == f"{grpo_curve:.3f} ± 0.000 (n=3)"
    assert rows.loc["oracle (control)", "b=1"] == "—"
    # knapsack: curve Δ = 3/4 · (0.04, 0.08, 0.04) = (0.03, 0.06, 0.03)
    diffs = np.array([0.03, 0.06, 0.03])
    half = T975[2] * diffs.std(ddof=1) / np.sqrt(3)
    data = table.data.set_index(["method", "budget"])
    assert data.loc[("knapsack", 1.0), "delta_mean"] == pytest.approx(0.04)
    assert data.loc[("knapsack", 1.0), "delta_ci95"] == pytest.approx(half)
    assert rows.loc["knapsack", "b=1"].startswith(f"+0.040 ± {half:.3f} (n=3, MDE ")
    assert data.loc[("duet", 0.5), "delta_mean"] == pytest.approx(-0.04)
    # tokens: per-seed ratios (the +seed offsets make them differ slightly), then the mean
    expected = np.mean([(1500 + s) / (1000 + s) for s in range(3)])
    assert data.loc[("knapsack", 1.0), "token_ratio"] == pytest.approx(expected)
    column = "tokens vs GRPO (b=1 / b=0.5)"
    assert rows.loc["knapsack", column] == "1.50 / 1.50"
    assert rows.loc["duet", column] == "3.0 / 3.0"
    assert rows.loc["oracle (control)", column] == "— / 0.90"


def test_readme_paste_replaces_only_its_testbeds_markers_and_is_idempotent(tmp_path):
    sweep = _sweep(tmp_path / "sweep")
    readme = tmp_path / "README.md"
    begin, end = headline.markers("smoke")
    other_begin, other_end = headline.markers("noisy-chain")
    # another testbed's headline, above this one's: a sweep must never overwrite it
    readme.write_text(f"# Title\n\n{other_begin}\nthe other testbed's table\n{other_end}\n\n"
                      f"before\n\n{begin}\nstale table\n{end}\n\nafter\n")
    assert report.main([str(sweep), "--no-plots", "--quiet", "--readme", str(readme)]) == 0
    once = readme.read_text()
    assert "stale table" not in once
    assert once.startswith(f"# Title\n\n{other_begin}\nthe other testbed's table\n{other_end}"
                           f"\n\nbefore\n\n{begin}\n| method")
    assert once.endswith(end + "\n\nafter\n")
    assert "| knapsack " in once and "### Headline" not in once
    assert report.main([str(sweep), "--no-plots", "--quiet", "--readme", str(readme)]) == 0
    assert readme.read_text() == once
    assert (sweep / "table_headline.csv").is_file()
    assert "### Headline" in (sweep / "tables.md").read_text()


def test_readme_without_its_testbeds_markers_is_a_one_line_error_before_any_work(tmp_path, capsys):
    sweep = _sweep(tmp_path / "sweep")
    readme = tmp_path / "README.md"
    # only another testbed's markers: this sweep (preset "smoke") has nowhere to go
    text = "no markers here\n" + "\n".join(headline.markers("noisy-chain")) + "\n"
    readme.write_text(text)
    assert report.main([str(sweep), "--no-plots", "--quiet", "--readme", str(readme)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "has no headline markers for 'smoke'" in err[0]
    assert readme.read_text() == text
    assert not (sweep / "tables.md").exists()   # refused before the report was built
    with pytest.raises(SweepError, match="does not exist"):
        headline.paste_into(tmp_path / "missing.md",
                            headline.headline_table(load_summaries(sweep)), "smoke")
