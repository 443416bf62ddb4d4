"""MATH-style JSONL data and math-verify rewards: the loader, real gold answers, hostile input."""
import json
import logging

import pytest

from tests.conftest import SHARED_DATA
from trainer.data import (PROMPT_SUFFIX, DataError, check_data_file, export_tasks_jsonl,
                          gsm8k_gold, load_eval_sets, load_tasks)
from trainer.verifier import (MATH_VERIFY, AnswerTooLarge, VerifierPool, _parse_gold,
                              check_magnitude, score_math_verify)

MATH500 = SHARED_DATA / "math500.jsonl"
GSM8K = SHARED_DATA / "gsm8k_test.jsonl"
needs_shared = pytest.mark.skipif(
    not (MATH500.is_file() and GSM8K.is_file()),
    reason=f"real benchmark files not found under {SHARED_DATA} (the ../shared/data layout of "
           f"this repository); the loader and verifier tests on written files still run")

# math-verify logs a warning per call when its own timeouts are off (we use the pool's instead)
logging.getLogger("math_verify").setLevel(logging.ERROR)


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------ loader ---------------------
def test_math_schema_prompt_bucket_and_gold(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [
        {"problem": "What is $1+1$?", "answer": "2", "level": 1, "subject": "Algebra",
         "unique_id": "a/1", "solution": "$1+1=\\boxed{2}$"},
        {"problem": "Find $x$.", "answer": "\\frac{1}{2}", "level": "Level 4"},
        {"problem": "Name it.", "answer": "\\text{Evelyn}", "subject": "Number Theory"},
        {"problem": "Plain.", "answer": "7", "extra": [1, 2]},
    ])
    tasks = load_tasks(path)
    assert [t.bucket for t in tasks] == ["level1", "level4", "number_theory", "all"]
    assert tasks[0].prompt == f"What is $1+1$? {PROMPT_SUFFIX}"
    assert PROMPT_SUFFIX == ("Please reason step by step, and put your final answer within "
                             "\\boxed{}.")
    assert tasks[1].gold == {"answer": "\\frac{1}{2}"} and tasks[1].scorer == MATH_VERIFY
    assert tasks[0].solution == "$1+1=\\boxed{2}$" and tasks[3].solution == ""
    assert len(load_tasks(path, limit=2)) == 2


def test_gsm8k_schema_final_line_is_the_gold_and_the_solution_scores_one(tmp_path):
    worked = "He has 1,000 + 600 = <<1000+600=1600>>1600 apples.\n#### 1,600"
    path = write_jsonl(tmp_path / "g.jsonl", [{"question": "How many apples?", "answer": worked}])
    [task] = load_tasks(path)
    assert task.answer == "1600" and task.bucket == "all"
    assert "<<" not in task.solution and task.solution.endswith("\\boxed{1600}.")
    assert task.prompt.startswith("How many apples? Please reason")
    assert score_math_verify(task.solution, task.gold) == 1.0
    assert gsm8k_gold("a\n#### -3.5") == "-3.5"


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("", "is empty"),
    ("\n\n", "is empty"),
    ('{"problem": "p", "answer": "1"}\n{"problem": "q", "answer": 2', ":2: invalid JSON"),
    ('{"problem": "p", "answer": "1"}\n[1, 2]', ":2: expected a JSON object"),
    ('{"problem": "p", "answer": "1"}\n{"problem": "q"}', ":2: missing field 'answer'"),
    ('{"problem": "p", "answer": 3}', "field 'answer' must be a string"),
    ('{"problem": "  ", "answer": "3"}', "field 'problem' is empty"),
    ('{"text": "p", "label": "3"}', "unknown schema"),
    ('{"question": "q", "answer": "no final line"}', "no final '#### N' line"),
    # a gold answer math-verify cannot parse: every response would score 0 with status "ok"
    ('{"problem": "p", "answer": "1"}\n\n{"problem": "q", "answer": "\\\\frac{"}',
     "bad.jsonl:3: gold answer '\\\\frac{' does not parse"),
    ('{"question": "q", "answer": "so\\n#### \\\\frac{"}', "bad.jsonl:1: gold answer"),
])
def test_bad_files_give_one_line_data_errors(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError) as info:
        check_data_file(path)
    text = str(info.value)
    assert message in text and "\n" not in text
    assert isinstance(info.value, ValueError)


def test_eval_sets_are_named_by_file_and_export_round_trips(tmp_path):
    a = write_jsonl(tmp_path / "setA.jsonl", [{"problem": "p", "answer": "1", "level": 2}])
    sets = load_eval_sets([a])
    assert list(sets) == ["setA"]
    out = export_tasks_jsonl(sets["setA"], tmp_path / "out" / "x.jsonl")
    row = json.loads(out.read_text())
    assert row["prompt"].endswith(PROMPT_SUFFIX) and row["gold"] == {"answer": "1"}
    assert row["bucket"] == "level2" and row["scorer"] == MATH_VERIFY
    with pytest.raises(DataError, match="two evaluation files"):
        load_eval_sets([a, a])


# ------------------------------------------------------------------ real data ------------------
@needs_shared
def test_every_real_gold_answer_parses():
    math500, gsm8k = load_tasks(MATH500), load_tasks(GSM8K)
    assert len(math500) == 500 and len(gsm8k) == 1319
    assert {t.bucket for t in math500} == {f"level{i}" for i in range(1, 6)}
    for task in math500 + gsm8k:
        assert _parse_gold(task.answer), task.answer


@needs_shared
def test_every_real_gold_solution_scores_one_through_the_verifier_pool():
    math500, gsm8k = load_tasks(MATH500), load_tasks(GSM8K)
    items = [(t.scorer, t.solution, t.gold) for t in math500 + gsm8k]
    with VerifierPool(workers=2, timeout=10.0) as pool:
        report = pool.score(items)
    failed = [(items[i][2]["answer"], s) for i, s in enumerate(report.status)
              if s != "ok" or report.rewards[i] != 1.0]
    assert not failed, failed[:10]
    # and a solution never scores against another problem's answer (spot check on 50 pairs)
    shifted = [(t.scorer, t.solution, math500[(i + 1) % 500].gold) for i, t in
               enumerate(math500[:50]) if t.answer != math500[(i + 1) % 500].answer]
    with VerifierPool(workers=2, timeout=10.0) as pool:
        assert pool.score(shifted).rewards.sum() <= 2      # a few MATH answers coincide in value


# ------------------------------------------------------------------ tricky and hostile ---------
@pytest.mark.parametrize("response, gold, expected", [
    ("so $x = \\boxed{\\frac{1}{\\frac{2}{3}}}$", "\\frac{3}{2}", 1.0),       # nested fraction
    ("\\boxed{\\dfrac{3}{2}}", "1.5", 1.0),
    ("The set is \\boxed{(-\\infty, 3]}.", "(-\\infty,3]", 1.0),              # interval
    ("The set is \\boxed{(-\\infty, 3)}.", "(-\\infty,3]", 0.0),              # wrong bracket
    ("\\boxed{[1,3)}", "(1,3]", 0.0),
    # math-verify reads every box of the answer span as one set {4, 5}: hedging earns nothing
    ("First \\boxed{4}, no wait, the answer is \\boxed{5}.", "5", 0.0),
    ("so 4 apples. Final: \\boxed{5}", "5", 1.0),                          # box beats prose
    ("We get \\boxed{\\text{(C)}} here", "\\text{(C)}", 1.0),                # boxed inside text
    ("\\boxed{2\\sqrt{13}}", "3\\sqrt{13}", 0.0),                             # wrong answer
    ("no answer at all", "3", 0.0),
    ("\\boxed{90^\\circ}", "90", 1.0),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)", 1.0),
])
def test_tricky_answers(response, gold, expected):
    assert score_math_verify(response, {"answer": gold}) == expected


def test_power_towers_are_refused_before_sympy_sees_them():
    for text in ["\\boxed{9^{9^{9^9}}}", "9^9^9^9", "\\boxed{10^{10^{10}}}", "x^{9^{9^9}}",
                 "2^{3^{4^5}}", "10^{1000001}", "9**9**9**9", "10^{999999}"]:
        with pytest.raises(AnswerTooLarge):
            check_magnitude(text)
    for text in ["2^{10}", "10^{100}", "2^{2^{10}}", "x^{n+1}", "(x+1)^{60}", "e^{i\\pi}",
                 "10^{9999}"]:
        check_magnitude(text)


def test_hostile_responses_score_zero_are_counted_and_the_pool_keeps_working():
    gold = {"answer": "3"}
    slow = {"answer": "(x+y+z+2)^{25}"}       # sympy needs ~9 s to tell these apart
    items = [(MATH_VERIFY, "\\boxed{9^{9^{9^9}}}", gold),           # refused up front: error
             (MATH_VERIFY, "so \\boxed{3}", gold),
             (MATH_VERIFY, "garbage " * 20000, gold),                # long garbage: just 0
             (MATH_VERIFY, "\\boxed{(x+y+z+1)^{25}}", slow),         # per-call timeout fires
             (MATH_VERIFY, "{" * 50000 + "\\boxed{3}", gold),
             (MATH_VERIFY, "\\boxed{4}", gold)]
    with VerifierPool(workers=1, timeout=1.5) as pool:
        report = pool.score(items)
        assert report.rewards.tolist() == [0.0, 1.0, 0.0, 0.0, 1.0, 0.0]
        assert report.status == ["error", "ok", "ok", "timeout", "ok", "ok"]
        assert report.timeouts == 1 and report.failures == 1
        # the worker that timed out still scores, and its alarm is not left armed
        again = pool.score([(MATH_VERIFY, "\\boxed{\\frac{6}{2}}", gold)] * 3)
        assert again.rewards.tolist() == [1.0, 1.0, 1.0] and again.status == ["ok"] * 3
