"""The documentation a user reads cannot rot: every doc path and section the code cites exists in
``docs/``, the README's links resolve, nothing points outside the repository, and ``--list``
shows every option with its help text.

Citations have the form ``docs/NAME.md §Anchor``; an anchor is the first word of a heading of
that file (a leading section number such as ``1.`` skipped), so ``docs/ALGORITHMS.md
§Knapsack-RL`` names the heading ``## Knapsack-RL — ...``.  A bare ``§Anchor`` (continuing a
citation, e.g. ``§Scaling``) must name a heading of some file in ``docs/``.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SOURCE_SUFFIXES = {".py", ".md", ".ipynb"}
SKIP_DIRS = {".git", "results", ".venv", "venv", "node_modules", "build", "dist"}

CITATION = re.compile(r"(?<![\w/.-])docs/([\w-]+\.md)(?:'s)?(\s+§([A-Za-z][\w-]*))?")
BARE_ANCHOR = re.compile(r"(?<![\w/])§([A-Za-z][\w-]*)")
# the retired out-of-repo contract, and numbered sections of it that no longer exist
OUTSIDE = re.compile(r"shared/docs|(?:DESIGN|ALGORITHMS)(?:\.md)?\s+(?:§\s?|section\s+)\d")
HEADING = re.compile(r"^#{1,6}\s+(?:\d+(?:\.\d+)*\.?\s+)?(\S+)", re.MULTILINE)
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
# a backticked path into the project's own packages, e.g. `trainer/ledger.py`
CODE_PATH = re.compile(r"`((?:allocators|lengthctl|trainer|bench|core|tests|docs|notebooks)/[\w./-]*)`")


def source_files() -> list[Path]:
    """Every source and documentation file of the project (this file's examples left out)."""
    out = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if rel.parts and rel.parts[0] in SKIP_DIRS or any(p.startswith(".") for p in rel.parts):
            continue
        if path.suffix in SOURCE_SUFFIXES and path.is_file() and path != Path(__file__).resolve():
            out.append(path)
    return sorted(out)


def anchors(doc: Path) -> list[str]:
    """The anchors of a markdown file: the first word of each heading, trailing punctuation off."""
    text = re.sub(r"^```.*?^```", "", doc.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)
    return [word.rstrip(".,:;") for word in HEADING.findall(text)]


def test_anchor_rule_reads_headings(tmp_path):
    doc = tmp_path / "X.md"
    doc.write_text("# Title here\n## Loop — one step\n```\n# not a heading\n```\n"
                   "## 5. ARRoL — pruning\n### 5.1 (a) Idea\n", encoding="utf-8")
    assert anchors(doc) == ["Title", "Loop", "ARRoL", "(a)"]


def test_docs_top_level_anchors_are_unique():
    for doc in sorted(DOCS.glob("*.md")):
        text = doc.read_text(encoding="utf-8")
        top = [m.rstrip(".,:;") for m in re.findall(r"^##\s+(?:\d+\.\s+)?(\S+)", text, re.MULTILINE)]
        dupes = sorted({a for a in top if top.count(a) > 1})
        assert not dupes, f"{doc.name}: section anchors used twice: {dupes}"


def test_every_cited_doc_and_section_exists():
    known = {doc.name: set(anchors(doc)) for doc in DOCS.glob("*.md")}
    every_anchor = set().union(*known.values())
    missing = []
    for path in source_files():
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding="utf-8")
        for match in CITATION.finditer(text):
            name, anchor = match.group(1), match.group(3)
            line = text.count("\n", 0, match.start()) + 1
            if name not in known:
                missing.append(f"{rel}:{line}: docs/{name} does not exist")
            elif anchor and anchor not in known[name]:
                missing.append(f"{rel}:{line}: docs/{name} has no section §{anchor}")
        for match in BARE_ANCHOR.finditer(text):
            if match.group(1) not in every_anchor:
                line = text.count("\n", 0, match.start()) + 1
                missing.append(f"{rel}:{line}: §{match.group(1)} is no section of docs/")
    assert not missing, "\n".join(missing)


def test_nothing_points_at_the_contract_outside_the_repository():
    found = []
    for path in source_files():
        text = path.read_text(encoding="utf-8")
        for match in OUTSIDE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0)!r}")
    assert not found, "\n".join(found)


def test_the_checks_catch_a_rotten_citation(tmp_path):
    """The citation patterns see what they must: a moved section, a missing file, an old
    out-of-repo reference."""
    text = "see docs/ALGORITHMS.md §Knapsack-RL and docs/NOPE.md §X; ALGORITHMS.md §6.3 and " \
           "../shared/docs/DESIGN.md"
    cited = [(m.group(1), m.group(3)) for m in CITATION.finditer(text)]
    assert cited == [("ALGORITHMS.md", "Knapsack-RL"), ("NOPE.md", "X")]
    assert [m.group(0) for m in OUTSIDE.finditer(text)] == ["ALGORITHMS.md §6", "shared/docs"]
    assert "Knapsack-RL" in anchors(DOCS / "ALGORITHMS.md")
    assert "Knapsack" not in anchors(DOCS / "ALGORITHMS.md")


@pytest.mark.parametrize("doc", ["README.md", *sorted(f"docs/{p.name}" for p in DOCS.glob("*.md"))])
def test_links_and_code_paths_resolve(doc):
    path = ROOT / doc
    text = path.read_text(encoding="utf-8")
    broken = []
    for target in MD_LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue                                    # web links and in-page anchors
        if not (path.parent / target.split("#")[0]).exists():
            broken.append(f"link {target}")
    for target in CODE_PATH.findall(text):
        if not (ROOT / target.split("::")[0]).exists():
            broken.append(f"path `{target}`")
    assert not broken, f"{doc}: " + ", ".join(broken)


# ------------------------------------------------------------------------------ --list help
def _declared_options():
    """(owner, field) of every option a user can set: method, length-control and preset fields."""
    import allocators
    import lengthctl
    from bench.overrides import FIXED_PRESET_FIELDS
    from trainer.config import Preset

    owners = [(f"method {n}", allocators.get(n).Options) for n in allocators.available()]
    owners += [(f"length control {n}", lengthctl.get(n).Options) for n in lengthctl.available()]
    owners.append(("preset", Preset))
    out = []
    for owner, cls in owners:
        for f in dataclasses.fields(cls):
            if f.init and not (cls is Preset and f.name in FIXED_PRESET_FIELDS):
                out.append((owner, f))
    return out


def test_every_option_declares_help():
    options = _declared_options()
    assert len(options) > 100                       # the registries were really read
    bare = [f"{owner}: {f.name}" for owner, f in options
            if len(str(f.metadata.get("help", "")).split()) < 2]
    assert not bare, "options without a help string: " + ", ".join(bare)


def test_list_renders_every_option_with_its_help():
    from bench.run import list_everything

    listing = list_everything()
    option_lines = [line for line in listing.splitlines() if line.startswith("      ")
                    and not line.lstrip().startswith("(")]
    rendered = {}
    for line in option_lines:
        name, _, rest = line.strip().partition("=")
        rendered.setdefault(name, []).append(rest)
    for owner, f in _declared_options():
        assert f.name in rendered, f"--list does not show {owner}'s option {f.name}"
        help_text = " ".join(str(f.metadata["help"]).split())
        assert any(f"  {help_text} (" in rest for rest in rendered[f.name]), \
            f"--list shows {owner}'s {f.name} without its help"
    # no line of the listing is an option without help: 'name=default' then straight to '(...)'
    assert not [line for line in option_lines if re.search(r"^\s+[\w.]+=\S+\s{3}\(", line)]


@pytest.mark.parametrize("value", ["0", "1", "1.5"])
def test_knapsack_alpha_outside_its_documented_range_is_refused_before_any_work(tmp_path, capsys,
                                                                              value):
    """``alpha`` is a probability (the cost confidence, ``ln(1 - alpha)``): its help now says so
    and its bounds are the solver's, so 1 is a one-line error before any work instead of a
    ValueError at the first plan, after the model loaded."""
    from bench.run import main

    out = tmp_path / "o"
    assert main(["--preset", "smoke", "--methods", "knapsack", "--budgets", "1.0", "--seeds", "0",
                 "--out", str(out), "--set", f"knapsack.alpha={value}"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "alpha" in err[0], captured.err
    assert not out.exists() or not any(out.rglob("metrics.jsonl"))


def test_every_registered_method_and_stop_rule_is_specified_in_docs():
    """A method that moves in is specified beside the others: its name or its module appears in
    docs/ALGORITHMS.md or docs/METHODS.md."""
    import allocators
    import lengthctl

    text = "\n".join((DOCS / name).read_text(encoding="utf-8")
                     for name in ("ALGORITHMS.md", "METHODS.md"))
    missing = []
    for registry in (allocators, lengthctl):
        for name in registry.available():
            module = registry.get(name).__module__.replace(".", "/") + ".py"
            if f"`{name}`" not in text and f"`{module}`" not in text:
                missing.append(f"{name} ({module})")
    assert not missing, "not specified in docs/: " + ", ".join(missing)
