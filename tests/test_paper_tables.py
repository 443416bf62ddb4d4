"""The papers' tables: layouts, "paper" columns only in the paper's own setting, ``--table
list``, bad names, and real ``--table`` runs on the smoke preset."""
import json

import pytest

from bench import paper_tables, tables
from bench.paper_tables import PAPER_TABLES, Context
from bench.report import build
from bench.run import main as run_main
from tests.test_tables import write_run

ALL_METHODS = ("grpo", "dapo", "arrol", "vip", "duet", "knapsack", "coba", "coba-fixed-exploit",
               "coba-fixed-explore", "coba-linear", "pilot-commit")


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """The same fake runs under the embedded preset's name and under DUET's own setting."""
    out = {}
    for preset in ("smoke", "qwen3-1.7b-math"):
        sweep = tmp_path_factory.mktemp(preset)
        for method in ALL_METHODS:
            for budget in (1.0, 0.5, 0.25):
                for seed in (0, 1):
                    final = 0.3 + 0.1 * budget + 0.02 * seed + (0.05 if method == "duet" else 0)
                    write_run(sweep, method, budget, seed, final=final, preset=preset,
                              curve=[0.2, 0.3, final], seconds=10 * budget)
        out[preset] = sweep
    return out


def context(sweep, preset, target=None):
    return Context(sweep, preset, tables.load_summaries(sweep), tables.load_curves(sweep),
                   tables.load_steps(sweep), target)


def test_every_table_renders_in_its_layout(sweeps):
    ctx = context(sweeps["smoke"], "smoke")
    expected_columns = {
        "duet-fig1_a": ["Method", "100%", "50%", "25%"],
        "duet-fig1_b": ["Method", "Held-out mean@k (%)"],
        "duet-fig1_c": ["Method", "Speed-up vs full-budget GRPO (×)"],
        "coba-table1": ["Method", "easy", "hard", "Avg"],
        "coba-table3": ["Method", "easy", "hard", "Avg"],
        "coba-table4": ["", "DP", "Heap-Based Greedy (Ours)", "Speedup"],
        "pilot-commit-cost": ["Config", "n", "PC", "GRPO", "DAPO", "vs GRPO", "vs DAPO"],
        "knapsack-effective": ["Method", "step 0", "step 1", "step 2", "step 3", "all steps"],
    }
    seen = {}
    for name in PAPER_TABLES:
        for table in paper_tables.render(name, ctx):
            seen[table.key] = list(table.display.columns)
            text = table.markdown()
            assert "our own" in text or name == "coba-table4"
            assert "(paper)" not in text                     # never on the embedded default
    assert seen == expected_columns
    bars = paper_tables.duet_fig1(ctx)[1].display.set_index("Method")
    assert list(bars.index) == ["Baseline (no RL)", "GRPO", "DAPO", "ARRoL", "VIP", "DUET",
                                "DUET (50% Budget)"]
    assert bars.loc["ARRoL"].iloc[0] == "41.0 ± 12.7"        # method "arrol" (issue 16)
    assert bars.loc["Baseline (no RL)"].iloc[0] == "20.0 ± 0.0"
    assert bars.loc["DUET (50% Budget)"].iloc[0] == "41.0 ± 12.7"   # 0.40, 0.42 -> ± t·s/√n
    coba1 = paper_tables.coba_table1(ctx)[0].display.set_index("Method")
    assert list(coba1.index) == ["GRPO", "Knapsack-RL", "CoBA-RL"]
    assert coba1.loc["Knapsack-RL", "Avg"].endswith("(+0.0)")
    coba3 = paper_tables.coba_table3(ctx)[0].display.set_index("Method")
    assert list(coba3.index) == ["(α=10.5, β=1.5)", "(α=1.5, β=10.5)", "Linear Step Decay",
                                 "CoBA-RL (Ours)"]
    speed = paper_tables.duet_fig1(ctx)[2].display.set_index("Method")
    assert speed.iloc[:, 0]["GRPO"] == "1.00×" and speed.iloc[:, 0]["DUET (50% Budget)"].startswith("2.00")
    assert speed.iloc[:, 0]["ARRoL"] == "1.00 ± 0.00×"      # filled since issue 16


def test_paper_numbers_only_beside_ours_in_the_papers_setting(sweeps):
    ctx = context(sweeps["qwen3-1.7b-math"], "qwen3-1.7b-math")
    pareto, bars, speed = paper_tables.duet_fig1(ctx)
    assert list(pareto.display.columns) == ["Method", "100%", "50%", "25%", "100% (paper)",
                                            "50% (paper)", "25% (paper)"]
    rows = pareto.display.set_index("Method")
    assert rows.loc["DUET", "100% (paper)"] == "61.6" and rows.loc["VIP", "50% (paper)"] == "56.0"
    assert rows.loc["DUET", "100%"] == "46.0 ± 12.7"          # ours, untouched by the paper's
    assert "56.0" in pareto.markdown()
    assert bars.display.set_index("Method").loc["Baseline (no RL)",
                                                "MATH-500 Mean@4 (%) (paper)"] == "45.1"
    assert speed.display.set_index("Method").loc["DUET (50% Budget)", "(paper)"] == "2.51×"
    assert set(pareto.data["source"]) == {"ours", "paper"}
    # CoBA-RL's setting is not ours: no paper numbers there
    assert "(paper)" not in paper_tables.coba_table1(ctx)[0].markdown()


def test_pilot_commit_cost_ratios_and_never(tmp_path):
    sweep = tmp_path / "pc"
    for seed in (0, 1):
        write_run(sweep, "grpo", 1.0, seed, final=0.5, curve=[0.2, 0.4, 0.5])         # step 4
        write_run(sweep, "pilot-commit", 1.0, seed, final=0.6, curve=[0.2, 0.5, 0.6])  # step 2
        write_run(sweep, "dapo", 1.0, seed, final=0.3, curve=[0.2, 0.3, 0.3])          # never
    table = paper_tables.pilot_commit_cost(context(sweep, "smoke", 0.5))[0].display.iloc[0]
    assert table["Config"] == "smoke (target 0.500)" and table["n"] == "8"
    assert table["PC"] == "128 ± 0" and table["GRPO"] == "256 ± 0"
    assert table["DAPO"] == "—" and table["vs GRPO"] == "2.00×" and table["vs DAPO"] == "—"


def test_table_list_and_unknown_table(capsys):
    assert run_main(["--table", "list"]) == 0
    out = capsys.readouterr().out
    for name in PAPER_TABLES:
        assert name in out
    assert run_main(["--table", "coba-table9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown table 'coba-table9'") and len(err.splitlines()) == 1


def test_real_tables_on_the_smoke_preset(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert run_main(["--table", "knapsack-effective", "--preset", "smoke", "--steps", "2",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Knapsack-RL: effective-gradient ratio" in printed and "Knapsack-RL − GRPO" in printed
    # besides the runs, the step-0 evaluations shared by every run of a seed (trainer.initial_eval)
    assert {p.name for p in out.iterdir() if p.is_dir()} == {"grpo__b1__s0", "knapsack__b1__s0",
                                                              "initial-evals"}
    assert (out / "paper_knapsack-effective.png").is_file()
    assert run_main(["--table", "coba-table4", "--out", str(out), "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert "115.05" in printed and "— paper" in printed and "— ours (heap)" in printed
    seconds = json.loads((out / "coba_table4.json").read_text())["seconds"]
    assert seconds["dp"] > 0 and seconds["heap"] > 0
    # the report rebuilds exactly what the runs wrote (both paper tables accumulated)
    names = ["tables.md"] + sorted(p.name for p in out.glob("*.csv"))
    before = {n: (out / n).read_bytes() for n in names}
    assert "paper_coba-table4.csv" in before and "paper_knapsack-effective.csv" in before
    report = build(out, with_plots=False)
    assert {n: (out / n).read_bytes() for n in names} == before
    assert set(report.paper) == {"coba-table4", "knapsack-effective"}
