"""A sweep's configuration from ``--config`` and ``--set``, checked before any work.

``--config FILE`` is JSON: ``{"preset": {field: value}, "method_options": {method: {...}},
"length_options": {method: {...}}, "length": {method: rule}}``.  ``--set KEY=VALUE``
(repeatable, applied after the file) changes one value without a file:

* ``preset.FIELD=V``          a preset field (``preset.lr=3e-5``);
* ``METHOD.OPTION=V``         one method's option (``vip.embedding=hashed``);
* ``method.OPTION=V``         that option of every selected method that declares it
                              (``method.max_rounds=4``);
* ``METHOD.length=RULE``      the stop rule one method runs with instead of its own
                              (``knapsack.length=duet``); ``method.length=RULE``: every
                              selected method;
* ``METHOD.length.OPTION=V``  an option of one method's stop rule (``duet.length.window=256``);
* ``length.OPTION=V``         that option of every selected method whose stop rule has it.

``V`` is read as JSON where it parses (numbers, ``true``/``false``, ``null``, lists such as
``["a.jsonl"]``) and as a plain string otherwise (``preset.device=cpu``).  Every value is checked
against its field's declared type and range (:mod:`core.options`); a problem is a
:class:`ConfigError`, one line naming the key, the value and what is allowed.
"""
from __future__ import annotations

import json
from pathlib import Path

import allocators
import lengthctl
from core.options import OptionError, check_values
from bench.presets import Preset, with_overrides

SECTIONS = ("preset", "method_options", "length_options", "length")
# set by the preset's name, never by a file or --set
FIXED_PRESET_FIELDS = ("name", "description", "warm_start")


class ConfigError(ValueError):
    pass


def load_config_file(path: str | None) -> dict:
    """The ``--config`` file as a dict with the three sections (missing ones empty)."""
    config = {key: {} for key in SECTIONS}
    if path is None:
        return config
    try:
        loaded = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path!r} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path!r}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path!r} is not valid JSON: {exc.msg} "
                          f"(line {exc.lineno})") from None
    except RecursionError:
        raise ConfigError(f"config file {path!r} nests too deeply to be a config") from None
    if not isinstance(loaded, dict) or set(loaded) - set(SECTIONS) or \
            not all(isinstance(v, dict) for v in loaded.values()):
        raise ConfigError(f"config file {path!r} must be an object with object values under "
                          f"keys among {', '.join(SECTIONS)}")
    for section in ("method_options", "length_options"):
        for method, values in loaded.get(section, {}).items():
            if not isinstance(values, dict):
                raise ConfigError(f"config file {path!r}: {section}.{method} must be an object")
    for method, rule in loaded.get("length", {}).items():
        if not isinstance(rule, str):
            raise ConfigError(f"config file {path!r}: length.{method} must be a stop rule's "
                              f"name; rules: {', '.join(lengthctl.available())}")
    config.update(loaded)
    return config


def parse_value(text: str):
    """JSON where it parses, else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_sets(config: dict, assignments: list[str], methods: list[str]) -> dict:
    """``config`` with every ``--set KEY=VALUE`` applied (see the module docstring)."""
    config = {key: {k: dict(v) if isinstance(v, dict) else v for k, v in config[key].items()}
              for key in SECTIONS}
    for text in assignments:
        key, sep, raw = text.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise ConfigError(f"--set {text!r}: expected KEY=VALUE with KEY like preset.lr, "
                              f"METHOD.OPTION, method.OPTION or METHOD.length.OPTION")
        value = parse_value(raw.strip())
        head, name = parts[0], parts[-1]
        length = len(parts) == 3 and parts[1] == "length"
        if len(parts) > 3 or (len(parts) == 3 and not length):
            raise ConfigError(f"--set {key}: a key has at most three parts "
                              f"(METHOD.length.OPTION)")
        if head == "preset" and len(parts) == 2:
            config["preset"][name] = value
        elif len(parts) == 2 and name == "length" and head != "length":
            if head != "method" and head not in methods:
                raise ConfigError(f"--set {key}: {head!r} is not a selected method "
                                  f"({', '.join(methods) or 'none'})")
            for method in (methods if head == "method" else [head]):
                config["length"][method] = value
        elif head in ("method", "length") and len(parts) == 2:
            section = "length_options" if head == "length" else "method_options"
            takers = [m for m in methods
                      if name in option_names(m, length=head == "length", config=config)]
            if not takers:
                raise ConfigError(f"--set {key}: no selected method has {head} option "
                                  f"{name!r}")
            for method in takers:
                config[section].setdefault(method, {})[name] = value
        else:
            if head not in allocators.available():
                raise ConfigError(f"--set {key}: {head!r} is neither preset, method, length "
                                  f"nor a method name; methods: "
                                  f"{', '.join(allocators.available())}")
            if head not in methods:
                raise ConfigError(f"--set {key}: method {head!r} is not among the selected "
                                  f"methods ({', '.join(methods) or 'none'})")
            section = "length_options" if length else "method_options"
            config[section].setdefault(head, {})[name] = value
    return config


def stop_rule(method: str, config: dict | None = None) -> str:
    """The stop rule ``method`` runs with under ``config``: the one it names, else its own."""
    return (config or {}).get("length", {}).get(method) or allocators.get(method).default_length


def run_options(config: dict, method: str) -> dict:
    """The RunSpec keywords of ``method`` under ``config``: its options, its stop rule's options
    and the rule when it is not the method's own (so a run of the method's own rule keeps its
    name and config)."""
    rule = stop_rule(method, config)
    return {"method_options": config.get("method_options", {}).get(method, {}),
            "length_options": config.get("length_options", {}).get(method, {}),
            "length": None if rule == allocators.get(method).default_length else rule}


def option_names(method: str, length: bool = False, config: dict | None = None
                 ) -> tuple[str, ...]:
    cls = lengthctl.get(stop_rule(method, config)) if length else allocators.get(method)
    return cls.Options.names()


def checked_preset(preset: Preset, overrides: dict) -> Preset:
    """``preset`` with ``overrides`` applied, every overridden value checked."""
    fixed = sorted(set(overrides) & set(FIXED_PRESET_FIELDS))
    if fixed:
        raise ConfigError(f"preset field(s) {', '.join(fixed)} cannot be overridden; "
                          f"choose another --preset")
    try:
        return with_overrides(preset, **overrides)
    except OptionError as exc:
        raise ConfigError(str(exc)) from None


def check_method_options(config: dict, methods: list[str]) -> None:
    """Every method's stop rule, options and stop-rule options checked against their
    declarations."""
    for method, rule in config.get("length", {}).items():
        if method not in allocators.available():
            raise ConfigError(f"length: unknown method {method!r}; known: "
                              f"{', '.join(allocators.available())}")
        try:
            lengthctl.get(rule)
        except KeyError:
            raise ConfigError(f"{method}.length = {rule!r}: expected one of the stop rules "
                              f"{', '.join(lengthctl.available())}") from None
    for section, length in (("method_options", False), ("length_options", True)):
        for method, values in config[section].items():
            if method not in allocators.available():
                raise ConfigError(f"{section}: unknown method {method!r}; known: "
                                  f"{', '.join(allocators.available())}")
            options_cls = (lengthctl.get(stop_rule(method, config)) if length
                           else allocators.get(method)).Options
            owner = f"{method}.length" if length else method
            try:
                check_values(options_cls, values, owner)
            except OptionError as exc:
                raise ConfigError(str(exc)) from None
