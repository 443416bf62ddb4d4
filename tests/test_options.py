"""Declared options (allocators/options.py), --config/--set (bench/overrides.py) and the
validation of every preset field and method option before any work."""
import json
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

import allocators
import lengthctl
from allocators.base import Setting
from core.options import Options, OptionError, check_instance, option
from bench.overrides import ConfigError, apply_sets, checked_preset, load_config_file
from bench.presets import PRESETS, Preset
from bench.run import list_everything, main

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Example(Options):
    period: int = option(10, "a period", ge=1)
    fraction: float = option(0.5, "a fraction", gt=0, le=1)
    kind: str = option("a", "an enum", choices=("a", "b"))
    limit: int | None = option(None, "optional", ge=2)
    flag: bool = option(False, "a flag")
    names: tuple[str, ...] = option((), "strings")


def test_values_are_checked_converted_and_named_in_one_line():
    parsed = Example.parse({"period": 3, "fraction": 1, "limit": None, "names": ["x", "y"]},
                           "example")
    assert parsed == Example(period=3, fraction=1.0, names=("x", "y"))
    assert isinstance(parsed.fraction, float)
    cases = {
        "period": ("abc", "example.period = 'abc': expected an integer >= 1"),
        "fraction": (0, "example.fraction = 0: expected a number in (0, 1]"),
        "kind": ("c", "example.kind = 'c': expected one of 'a', 'b'"),
        "limit": (1, "example.limit = 1: expected an integer >= 2, or null"),
        "flag": (1, "example.flag = 1: expected true or false"),
        "names": ([1], "example.names = [1]: expected a list of strings"),
    }
    for name, (value, message) in cases.items():
        with pytest.raises(OptionError) as info:
            Example.parse({name: value}, "example")
        assert str(info.value) == message
    with pytest.raises(OptionError, match="period = True"):      # a bool is not an int
        Example.parse({"period": True}, "example")
    with pytest.raises(OptionError, match="period = 2.0"):       # nor is a float
        Example.parse({"period": 2.0}, "example")
    with pytest.raises(OptionError, match="fraction = nan"):
        Example.parse({"fraction": float("nan")}, "example")
    with pytest.raises(OptionError, match=r"^example: unknown option\(s\) perod; known: period"):
        Example.parse({"perod": 3}, "example")


SETTING = Setting(prompts_per_step=8, group_size=8, budget_fraction=1.0, max_response_tokens=40,
                  steps=4, seed=0)


@pytest.mark.parametrize("name", allocators.available())
def test_every_method_declares_each_option_once_with_help_and_logs_it(name):
    cls = allocators.get(name)
    for options_cls in (cls.Options, lengthctl.get(cls.default_length).Options):
        for f in fields(options_cls):
            assert f.metadata.get("help"), f"{name}: option {f.name} has no help"
        defaults = options_cls()
        # every default passes its own declared type and range
        assert options_cls.parse(defaults.to_dict(), name) == defaults
    allocator = cls(SETTING)
    resolved = allocator.resolved_options()
    assert set(cls.Options.names()) <= set(resolved), "config.json must log every option"
    json.dumps(resolved)
    controller = lengthctl.get(cls.default_length)(40, 0, **allocator.needs().length_options)
    assert set(controller.Options.names()) <= set(controller.resolved_options())
    with pytest.raises(OptionError, match="unknown option"):
        cls(SETTING, no_such_option=1)


def test_method_options_reach_the_method():
    coba = allocators.get("coba")(SETTING, kappa=12, window=3)
    assert (coba.opts.kappa, coba.opts.window) == (12.0, 3)
    assert coba.resolved_options()["kappa"] == 12.0
    vip = allocators.get("vip")(SETTING, embedding="hashed")
    assert vip.needs().features == {"embedding": {"embedding": "hashed"}}
    assert allocators.get("vip")(SETTING).needs().features == {"embedding": {"embedding": "minilm"}}


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_named_preset_is_within_its_declared_ranges(name):
    check_instance(PRESETS[name], "preset")


def test_preset_fields_have_help_and_overrides_are_checked():
    for f in fields(Preset):
        if f.name not in ("name", "description", "warm_start"):
            assert f.metadata.get("help"), f.name
    smoke = PRESETS["smoke"]
    assert checked_preset(smoke, {"lr": 1, "eval_data": ["a.jsonl"]}).eval_data == ("a.jsonl",)
    for overrides, message in [({"steps": "abc"},
                                    "preset.steps = 'abc': expected an integer in [1, 1000000]"),
                               ({"checkpoint_every": 0}, "preset.checkpoint_every = 0"),
                               ({"eval_every": 0}, "preset.eval_every = 0"),
                               ({"top_p": 1.5}, "preset.top_p = 1.5: expected a number in (0, 1]"),
                               ({"dtype": "fp8"}, "preset.dtype = 'fp8': expected one of"),
                               ({"warm_start": None}, "preset field(s) warm_start cannot"),
                               ({"stepz": 3}, "preset: unknown field(s) stepz")]:
        with pytest.raises(ConfigError) as info:
            checked_preset(smoke, overrides)
        assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_set_parses_values_fans_out_and_wins_over_the_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"preset": {"lr": 1e-4}, "method_options": {"dapo": {"tol": 0.1}}}))
    config = apply_sets(load_config_file(str(path)), [
        "preset.lr=3e-5", "preset.device=cpu", "preset.eval_data=[\"a.jsonl\"]",
        "method.max_rounds=4", "vip.embedding=hashed", "duet.length.window=256",
        "length.eps_len=0.1", "preset.model_dir=null"], ["dapo", "greso", "vip", "duet",
                                                         "duet-abort", "grpo"])
    assert config["preset"] == {"lr": 3e-5, "device": "cpu", "eval_data": ["a.jsonl"],
                                "model_dir": None}
    # method.X goes to every selected method that declares X, and nowhere else
    assert config["method_options"] == {"dapo": {"tol": 0.1, "max_rounds": 4},
                                        "greso": {"max_rounds": 4}, "vip": {"embedding": "hashed"}}
    assert config["length_options"] == {"duet": {"window": 256, "eps_len": 0.1},
                                        "duet-abort": {"eps_len": 0.1}}
    for bad, message in [("lr=1", "expected KEY=VALUE"), ("preset.lr", "expected KEY=VALUE"),
                         ("method.kappa=1", "no selected method has method option 'kappa'"),
                         ("coba.kappa=1", "'coba' is not among the selected methods"),
                         ("nope.kappa=1", "'nope' is neither preset"),
                         ("a.b.c.d=1", "at most three parts")]:
        with pytest.raises(ConfigError, match=message):
            apply_sets(load_config_file(None), [bad], ["dapo"])


def test_list_shows_every_option_with_its_default_and_range():
    text = list_everything()
    assert "kappa=11.0  alpha + beta" in text and "(a number > 0)" in text
    assert 'embedding="minilm"' in text and "one of 'minilm', 'hashed'" in text
    assert "checkpoint_every=10  steps between checkpoints (an integer in [1, 1000000])" in text
    assert "refit_every=10" in text                                  # DUET's length control


def test_list_prints_each_summary_whole_and_without_rest_markup():
    text = list_everything()
    assert "``" not in text and ":func:" not in text and ":class:" not in text
    assert "  coba                 max_len   CoBA-RL in the shared loop: one round, counts from " \
           "coba_counts.\n" in text
    # these summaries wrap in their docstrings: the first line alone stopped mid-sentence
    assert "counts from knapsack_counts (None options = the §Scaling rule of the released " \
           "value).\n" in text
    assert "prompts whose pilot pass rate lies in an informative band (docs/ALGORITHMS.md §Pilot-Commit).\n" in text


def test_a_summary_keeps_the_text_sphinx_would_show():
    from bench.run import summary

    class Documented:
        """Counts from :func:`~allocators.coba.coba_counts`, see :class:`the options <Opts>`
        and ``kappa``.

        Not this paragraph."""

    assert summary(Documented) == "Counts from coba_counts, see the options and kappa."


# ------------------------------------------------------------------------------ the CLI
def _refused(capsys, out: Path, argv) -> str:
    """bench.run refuses ``argv`` with exit code 2, one line, and trains nothing."""
    assert main(["--preset", "smoke", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    assert not list(out.glob("*/metrics.jsonl")) and not list(out.glob("*/config.json"))
    return err[0]


def test_bad_values_are_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "o"
    for index, (config, message) in enumerate([
            ({"preset": {"steps": "abc"}},
             "preset.steps = 'abc': expected an integer in [1, 1000000]"),
            ({"preset": {"checkpoint_every": 0}}, "preset.checkpoint_every = 0"),
            ({"preset": {"eval_every": 0}}, "preset.eval_every = 0"),
            ({"method_options": {"coba": {"kappa": "x"}}}, "coba.kappa = 'x'"),
            ({"method_options": {"coba": {"kapa": 1}}}, "coba: unknown option(s) kapa"),
            ({"length_options": {"duet": {"window": 0}}}, "duet.length.window = 0"),
            ({"method_options": {"nope": {}}}, "unknown method 'nope'")]):
        path = tmp_path / f"c{index}.json"
        path.write_text(json.dumps(config))
        assert message in _refused(capsys, out, ["--methods", "grpo,coba,duet",
                                                 "--config", str(path)])
    for argv, message in [
            (["--set", "preset.lr=abc"], "preset.lr = 'abc': expected a number in (0, 1]"),
            (["--set", "preset.schedule=linear"], "expected one of 'constant', 'cosine'"),
            (["--set", "coba.window=0"], "coba.window = 0: expected an integer >= 1"),
            (["--set", "method.nope=1"], "no selected method has method option 'nope'"),
            (["--set", "vip.embedding=hashed"], "'vip' is not among the selected methods"),
            (["--log-to", "mlflow"], "unknown tracker 'mlflow'")]:
        # with --methods all a bad option must fail the sweep, not skip the method as infeasible
        assert message in _refused(capsys, out, ["--methods", "grpo,coba", *argv])
    assert "coba.kappa = -1" in _refused(capsys, out, ["--methods", "all",
                                                       "--set", "coba.kappa=-1"])


def test_the_cli_exits_non_zero_in_one_line_on_a_wrongly_typed_config(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"preset": {"steps": "abc"}}))
    out = tmp_path / "o"
    done = subprocess.run([sys.executable, "-m", "bench.run", "--preset", "smoke", "--methods",
                           "grpo", "--config", str(path), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip() == \
        "error: preset.steps = 'abc': expected an integer in [1, 1000000]"
    assert not out.exists()
