"""DUET's stop rule (lengthctl/duet.py): constants, markers, the per-row state machine, refit."""
from __future__ import annotations

import math
import pickle
import re

import numpy as np
import pytest

import lengthctl
from allocators.base import Rollout
from lengthctl.duet import DuetStop, find_marker, refit_gates, scale_token_constant

EOS = None          # a stream entry meaning "the policy samples EOS here"
FILLER = " x"
BOXED_7 = ["\\boxed{", "7", "}"]


# -- helpers -----------------------------------------------------------------------------
def seed_where(*conditions):
    """A row seed whose successive uniform draws satisfy ``conditions`` in order."""
    for seed in range(100_000):
        draws = np.random.default_rng(seed).random(len(conditions))
        if all(cond(u) for cond, u in zip(conditions, draws)):
            return seed
    raise AssertionError("no seed found")


KEEP_ON_FIRE = seed_where(lambda u: u >= 0.05)                     # stops / aborts at once
EPS_FIRST = seed_where(lambda u: u < 0.05, lambda u: u >= 0.05)     # eps wins, then not
EPS_TWICE = seed_where(lambda u: u < 0.05, lambda u: u < 0.05, lambda u: u >= 0.05)


def stream_with(markers_at: dict[int, list[str]], length: int, eos_at: int | None = None):
    """Filler tokens with the given token lists spliced in at their start positions."""
    tokens = [FILLER] * length
    for start, pieces in markers_at.items():
        tokens[start:start + len(pieces)] = pieces
    if eos_at is not None:
        tokens[eos_at] = EOS
    return tokens


class Run:
    """Drive one row like the engine does: needs_margin, then decide(t, margin, tail)."""

    def __init__(self, row, tokens, max_len, margins=lambda t: 0.0):
        self.margin_asked, self.scans = [], []
        self.finish, self.n_tokens = "max_len", max_len
        for t in range(max_len):
            margin = float("nan")
            if row.needs_margin:
                self.margin_asked.append(t)
                margin = margins(t)
            decision = row.decide(t, margin, self._tail(tokens, t))
            if decision is not None:
                self.finish, self.n_tokens = decision, t + 1
                break
            if t < len(tokens) and tokens[t] is EOS:
                self.finish, self.n_tokens = "eos", t + 1
                break
        self.flags, self.weight = row.flags, row.weight

    def _tail(self, tokens, t):
        def tail(k):
            self.scans.append((t, k))
            return "".join(tok for tok in tokens[max(0, t - k):t] if tok is not EOS)
        return tail


def rollout(n_tokens, finish="eos", step=0):
    return Rollout(pid=0, group=0, tag="main", step=step, round=0,
                   tokens=np.zeros(n_tokens, dtype=np.int64),
                   logprobs=np.zeros(n_tokens, dtype=np.float32), finish=finish)


# -- resolved constants --------------------------------------------------------------------
RESOLVED_KEYS = ("min_tokens", "initial_k1", "initial_k2", "grace", "scan_window",
                 "check_interval", "refit_k1_floor", "min_gap", "hysteresis")


@pytest.mark.parametrize("max_len, expected", [
    (3072, (200, 921, 2150, 150, 256, 8, 32, 50, 5)),     # the released config exactly
    (128, (8, 38, 89, 6, 16, 1, 1, 2, 2)),                # docs/ALGORITHMS.md §Scaling table
    (64, (4, 19, 44, 3, 16, 1, 1, 1, 2)),
    (32, (2, 9, 22, 2, 16, 1, 1, 1, 2)),
])
def test_resolved_constants_match_released_and_section_10(max_len, expected):
    options = DuetStop(max_len, seed=0).resolved_options()
    assert tuple(options[k] for k in RESOLVED_KEYS) == expected
    assert all(isinstance(options[k], int) for k in RESOLVED_KEYS)


def test_registered_and_scale_free_defaults():
    controller = lengthctl.get("duet")(128, seed=0)
    options = controller.resolved_options()
    assert options["eps_abort"] == 0.05 and options["eps_len"] == 0.05
    assert options["window"] == 1024 and options["refit_every"] == 10
    assert options["default_tau"] == pytest.approx(0.745)


def test_rounding_is_half_up_on_exact_ties():
    assert scale_token_constant(5, 2, 1536) == 3          # 2.5 -> 3
    assert scale_token_constant(5, 2, 1535) == 2          # 2.498 -> 2
    assert scale_token_constant(8, 1, 960) == 3           # 2.5 -> 3 (Python round gives 2)
    assert scale_token_constant(256, 16, 8) == 8          # the floor is capped at L_max


def test_absolute_constants_and_overrides():
    options = DuetStop(4096, seed=0, absolute=True).resolved_options()
    assert tuple(options[k] for k in RESOLVED_KEYS) == (200, 1228, 2867, 150, 256, 8, 32, 50, 5)
    options = DuetStop(128, seed=0, hysteresis=5, scan_window=64).resolved_options()
    assert options["hysteresis"] == 5 and options["scan_window"] == 64


@pytest.mark.parametrize("kwargs", [
    dict(max_response_tokens=128, absolute=True),       # min_tokens 200 > K1 38
    dict(max_response_tokens=128, min_tokens=39),       # min_tokens > K1
    dict(max_response_tokens=128, grace=40),            # K2 + grace = 129 >= L_max
    dict(max_response_tokens=2),                        # K2 + grace = 2 = L_max
    dict(max_response_tokens=128, eps_abort=1.5),
    dict(max_response_tokens=128, stop_floor=0.9, stop_ceiling=0.5),
    dict(max_response_tokens=128, domain="chemistry"),
    dict(max_response_tokens=128, bogus=1),
])
def test_invalid_configurations_fail_loudly(kwargs):
    with pytest.raises(ValueError):
        DuetStop(seed=0, **kwargs)


# -- markers -------------------------------------------------------------------------------
@pytest.mark.parametrize("text, domain, expected", [
    (r"so the result is \boxed{12}.", "math", True),
    (r"\boxed{\frac{1}{2}}", "math", True),
    (r"\boxed{\sqrt{\frac{1}{2}}}", "math", True),               # two nested levels
    (r"\boxed{\sqrt{\frac{1}{\sqrt{2}}}}", "math", False),       # three: beyond the released regex
    (r"\boxed{12", "math", False),
    (r"\boxed{\frac{1}{2}", "math", False),
    (r"\boxed[3]", "math", True),
    (r"\boxed 3", "math", False),
    ("## Final Answer\nseven", "math", True),
    ("Final answer: 7", "math", True),
    ("Final answer = x+1", "math", True),
    ("Final answer: ", "math", False),                           # nothing after the colon yet
    ("final answer: 7", "math", False),                          # case-sensitive, as released
    ("<answer>4</answer>", "math", True),
    ("<answer>4", "math", False),
    ("<final_answer>x</final_answer>", "math", True),
    ("Therefore, the answer is 5", "math", True),
    ("Therefore, the answer is ", "math", False),
    ("thereforethe answer is 5", "math", False),
    ("12 + 7 = 19, carry the one", "math", False),
    ("```python\nprint(1)\n```", "code", True),
    ("```\nx = 1\n```", "code", True),
    ("```python\nprint(1)\n", "code", False),
    ("Here:\n```\nx = 1", "code", False),                       # opening fence alone
    (r"\boxed{1}", "code", False),
    ("<answer>1</answer>", "code", True),
    (r"\boxed{1}", "generic", True),
])
def test_find_marker(text, domain, expected):
    assert find_marker(text, domain) is expected


def test_find_marker_rejects_unknown_domain():
    with pytest.raises(ValueError):
        find_marker("x", "chemistry")


def test_extra_task_markers_are_searched():
    tokens = stream_with({25: ["#### ", "42", "\n"]}, 128)
    default = Run(DuetStop(128, 0).row_controller(0, None, KEEP_ON_FIRE), tokens, 128)
    custom = DuetStop(128, 0, markers=[r"####\s*-?\d+"])
    extra = Run(custom.row_controller(0, None, KEEP_ON_FIRE), tokens, 128)
    assert not default.flags["saw_marker"] and default.finish == "aborted"
    assert extra.flags["saw_marker"] and extra.flags["marker_at"] == 38
    assert r"####\s*-?\d+" in custom.resolved_options()["markers"]
    with pytest.raises(re.error):
        DuetStop(128, 0, markers=["(unclosed"])


# -- the state machine ---------------------------------------------------------------------
# L_max = 128: min_tokens 8, K1 38, K2 89, grace 6 (late gate 95), check every token,
# window 16, h = 2.  L_max = 3072: min 200, K1 921, late gate 2300, every 8 tokens, window 256.
def test_nothing_is_scanned_before_k1_and_scans_use_the_window():
    run = Run(DuetStop(128, 0).row_controller(0, None, KEEP_ON_FIRE), [FILLER] * 128, 128)
    scan_positions = [t for t, _ in run.scans]
    assert scan_positions[0] == 38 and scan_positions == list(range(38, 96))
    assert {k for _, k in run.scans} == {16}
    assert run.finish == "aborted" and run.n_tokens == 96


def test_marker_then_confident_run_stops():
    tokens = stream_with({30: BOXED_7}, 128)              # complete by t = 33, within the window
    run = Run(DuetStop(128, 0).row_controller(0, {"tau": 0.6}, KEEP_ON_FIRE), tokens, 128,
              margins=lambda t: 0.9)
    assert run.flags["saw_marker"] and run.flags["marker_at"] == 38
    # the margin at the detection position counts: positions 38 and 39 make h = 2
    assert run.finish == "stopped" and run.n_tokens == 40
    assert run.flags["stop_phase"] == "B" and run.weight == 1.0


def test_needs_margin_only_at_scan_positions_and_after_the_marker():
    tokens = stream_with({1000: BOXED_7}, 3072)
    run = Run(DuetStop(3072, 0).row_controller(0, {"tau": 0.99}, KEEP_ON_FIRE), tokens, 3072)
    before = [t for t in run.margin_asked if t < 1008]
    assert before == list(range(928, 1008, 8))            # checks at multiples of 8 from K1
    assert run.flags["marker_at"] == 1008
    assert run.margin_asked[len(before):] == list(range(1008, 3072))
    assert run.finish == "max_len"                         # marker seen: never aborted


def test_hysteresis_needs_consecutive_confident_positions():
    controller = DuetStop(3072, 0)                        # h = 5
    tokens = stream_with({900: BOXED_7}, 3072)
    pattern = {928: 0.9, 929: 0.9, 930: 0.9, 931: 0.9, 932: 0.1,
               933: 0.9, 934: 0.9, 935: 0.9, 936: 0.9, 937: 0.9}
    run = Run(controller.row_controller(0, {"tau": 0.8}, KEEP_ON_FIRE), tokens, 3072,
              margins=lambda t: pattern.get(t, 0.0))
    assert run.finish == "stopped" and run.n_tokens == 938
    # a margin equal to tau is not above it
    run = Run(controller.row_controller(0, {"tau": 0.9}, KEEP_ON_FIRE), tokens, 3072,
              margins=lambda t: 0.9)
    assert run.finish == "max_len"


def test_eps_len_ignores_a_firing_and_the_next_confident_position_fires_again():
    tokens = stream_with({30: BOXED_7}, 128)
    controller = DuetStop(128, 0)
    run = Run(controller.row_controller(0, {"tau": 0.5}, EPS_FIRST), tokens, 128,
              margins=lambda t: 0.9)
    assert run.finish == "stopped" and run.n_tokens == 41     # fire at 39 ignored, 40 fires
    run = Run(controller.row_controller(0, {"tau": 0.5}, EPS_TWICE), tokens, 128,
              margins=lambda t: 0.9)
    assert run.n_tokens == 42
    # after an ignored firing, a non-confident position resets the run to zero: h more needed
    margins = {38: 0.9, 39: 0.9, 40: 0.1, 41: 0.9, 42: 0.9}
    run = Run(controller.row_controller(0, {"tau": 0.5}, EPS_FIRST), tokens, 128,
              margins=lambda t: margins.get(t, 0.0))
    assert run.n_tokens == 43


def test_no_marker_is_aborted_at_the_late_gate():
    run = Run(DuetStop(128, 0).row_controller(0, None, KEEP_ON_FIRE), [FILLER] * 128, 128)
    assert run.finish == "aborted" and run.n_tokens == 96
    assert run.flags == {"saw_marker": False, "marker_at": None, "eps_kept": False,
                         "stop_phase": "C"}
    assert run.weight == 1.0


def test_eps_kept_row_is_upweighted_and_never_stopped_again():
    tokens = stream_with({100: BOXED_7}, 128)             # a marker after the keep decision
    row = DuetStop(128, 0).row_controller(0, {"tau": 0.1}, EPS_FIRST)
    run = Run(row, tokens, 128, margins=lambda t: 0.9)
    assert run.finish == "max_len" and run.n_tokens == 128
    assert run.flags["eps_kept"] and not run.flags["saw_marker"]
    assert run.weight == pytest.approx(20.0)
    assert run.margin_asked == list(range(38, 96))        # nothing after the keep decision
    assert max(t for t, _ in run.scans) == 95


def test_last_full_check_at_the_late_gate_catches_a_marker_between_checks():
    # the marker completes at t = 2300 = K2 + grace, which is not a multiple of 8
    tokens = stream_with({2297: BOXED_7}, 3072)
    run = Run(DuetStop(3072, 0).row_controller(0, {"tau": 0.5}, KEEP_ON_FIRE), tokens, 3072,
              margins=lambda t: 0.0)
    assert run.flags["saw_marker"] and run.flags["marker_at"] == 2300
    assert run.finish == "max_len"


@pytest.mark.parametrize("max_len, marker_start, seen", [
    (3072, 300, False),     # more than 256 tokens before the first check at 928
    (3072, 671, False),     # its last piece (673) is just outside the window [672, 928)
    (3072, 672, True),
    (128, 10, False),       # window 16 at the first check t = 38 covers tokens 22..37
    (128, 22, True),
])
def test_a_marker_that_scrolled_out_of_the_scan_window_is_missed(max_len, marker_start, seen):
    tokens = stream_with({marker_start: BOXED_7}, max_len)
    run = Run(DuetStop(max_len, 0).row_controller(0, None, KEEP_ON_FIRE), tokens, max_len)
    assert run.flags["saw_marker"] is seen
    assert (run.finish == "aborted") is not seen


def test_natural_eos_before_any_gate():
    run = Run(DuetStop(128, 0).row_controller(0, None, KEEP_ON_FIRE),
              stream_with({}, 128, eos_at=5), 128)
    assert run.finish == "eos" and run.n_tokens == 6
    assert run.flags["stop_phase"] == "pre" and run.weight == 1.0
    run = Run(DuetStop(128, 0).row_controller(0, None, KEEP_ON_FIRE),
              stream_with({}, 128, eos_at=50), 128)
    assert run.flags["stop_phase"] == "A" and not run.flags["eps_kept"]


def test_tau_from_control_default_and_nan_margin():
    controller = DuetStop(128, 0)
    assert controller.row_controller(0, None, 1).tau == pytest.approx(0.745)
    assert controller.row_controller(0, {}, 1).tau == pytest.approx(0.745)
    assert controller.row_controller(0, {"tau": 0.6}, 1).tau == 0.6
    with pytest.raises(ValueError):
        controller.row_controller(0, {"tau": float("nan")}, 1)
    # a position whose margin the engine did not compute never counts as confident
    tokens = stream_with({30: BOXED_7}, 128)
    run = Run(controller.row_controller(0, {"tau": 0.5}, KEEP_ON_FIRE), tokens, 128,
              margins=lambda t: float("nan") if t == 39 else 0.9)
    assert run.n_tokens == 42                             # 38 counts, 39 resets, 40 and 41 fire


def test_decisions_depend_only_on_the_row_seed():
    tokens = [FILLER] * 128
    outcomes = [Run(DuetStop(128, seed=s).row_controller(3, None, row_seed=EPS_FIRST),
                    tokens, 128).finish for s in (0, 1)]
    assert outcomes == ["max_len", "max_len"]
    draws = [Run(DuetStop(128, 0).row_controller(0, None, seed), tokens, 128).finish
             for seed in range(200)]
    assert draws == [Run(DuetStop(128, 0).row_controller(0, None, seed), tokens, 128).finish
                     for seed in range(200)]


def test_eps_abort_keep_rule_is_unbiased():
    """sum(kept-by-chance * 1/eps) + never-gated estimates the full-rollout sum."""
    max_len, reps = 32, 1500
    controller = DuetStop(max_len, 0)                      # late gate 24, eps_abort 0.05
    rng = np.random.default_rng(7)
    gated = [[FILLER] * max_len for _ in range(12)]
    early_eos = [stream_with({}, max_len, eos_at=int(e)) for e in rng.integers(3, 20, 6)]
    with_marker = [stream_with({int(s): BOXED_7}, max_len) for s in rng.integers(5, 18, 6)]
    streams = gated + early_eos + with_marker
    values = rng.uniform(0.5, 2.0, len(streams))
    truth = float(values.sum())
    estimates, kept_by_chance = np.empty(reps), 0
    for r in range(reps):
        total = 0.0
        for i, (tokens, value) in enumerate(zip(streams, values)):
            run = Run(controller.row_controller(0, None, r * 1000 + i), tokens, max_len)
            if i >= len(gated):
                assert run.finish in ("eos", "max_len") and not run.flags["eps_kept"]
            if run.finish != "aborted":
                total += value * run.weight
            kept_by_chance += run.flags["eps_kept"]
        estimates[r] = total
    standard_error = estimates.std(ddof=1) / math.sqrt(reps)
    assert abs(estimates.mean() - truth) < 4 * standard_error
    trials = reps * len(gated)
    assert abs(kept_by_chance / trials - 0.05) < 4 * math.sqrt(0.05 * 0.95 / trials)


# -- K1/K2 refit ---------------------------------------------------------------------------
def test_refit_on_a_known_window():
    lengths = np.arange(10, 410, 10)                      # 40 lengths, 10..400
    # Q_0.30 at position 11.7 -> 127, Q_0.80 at position 31.2 -> 322 (linear interpolation)
    assert refit_gates(lengths, k1_floor=32, min_gap=50) == (127, 322)
    assert refit_gates(lengths[:5], k1_floor=32, min_gap=50) == (32, 82)   # floor and gap bind


def test_refit_schedule_window_and_aborted_rows():
    controller = DuetStop(3072, 0, window=40)
    for step in range(9):
        controller.observe(step, [rollout(10 * (4 * step + j + 1)) for j in range(4)])
        assert (controller.k1, controller.k2) == (921, 2150)
    controller.observe(9, [rollout(10 * (36 + j + 1)) for j in range(4)]
                       + [rollout(3000, finish="aborted")])
    assert (controller.k1, controller.k2) == (127, 322)   # the 40 lengths 10..400
    for step in range(10, 19):
        controller.observe(step, [rollout(1000)])
        assert (controller.k1, controller.k2) == (127, 322)
    controller.observe(19, [rollout(1000)])
    # the window keeps the last 40 kept lengths: 110..400 and ten 1000s
    expected = refit_gates(np.array(list(range(110, 410, 10)) + [1000] * 10),
                           k1_floor=32, min_gap=50)
    assert (controller.k1, controller.k2) == expected
    assert controller.gates()["window_lengths"] == 40


def test_refit_waits_for_enough_lengths_then_restarts_its_clock():
    controller = DuetStop(3072, 0)
    for step in range(10):
        controller.observe(step, [rollout(500)] * 3)      # 30 lengths by step 9
    assert controller.k1 == 921
    controller.observe(10, [rollout(500)] * 3)
    assert (controller.k1, controller.k2) == (500, 550)
    controller.observe(19, [rollout(2000)] * 100)
    assert controller.k1 == 500                           # only 9 steps since the refit
    controller.observe(20, [])
    assert controller.k1 == 2000


def test_rows_use_the_gates_of_their_step_and_refit_can_switch_the_abort_off():
    controller = DuetStop(128, 0)
    old_row = controller.row_controller(9, None, KEEP_ON_FIRE)
    for step in range(10):
        controller.observe(step, [rollout(128, finish="max_len")] * 4)
    assert (controller.k1, controller.k2) == (128, 130)   # K2 = K1 + min gap 2
    assert not controller.gates()["abort_reachable"]
    new = Run(controller.row_controller(10, None, KEEP_ON_FIRE), [FILLER] * 128, 128)
    assert new.finish == "max_len" and not new.scans
    old = Run(old_row, [FILLER] * 128, 128)
    assert old.finish == "aborted" and old.n_tokens == 96


def test_controller_and_rows_pickle_mid_run():
    controller = DuetStop(128, 0)
    for step in range(10):
        controller.observe(step, [rollout(60 + step)] * 4)
    row = controller.row_controller(10, {"tau": 0.5}, EPS_FIRST)
    tokens = stream_with({50: BOXED_7}, 128)
    for t in range(45):
        row.decide(t, 0.0, lambda k, t=t: "".join(tokens[max(0, t - k):t]))
    clone_controller = pickle.loads(pickle.dumps(controller))
    assert clone_controller.gates() == controller.gates()
    assert clone_controller.resolved_options() == controller.resolved_options()
    clone = pickle.loads(pickle.dumps(row))
    for t in range(45, 128):
        tail = (lambda k, t=t: "".join(tokens[max(0, t - k):t]))
        a, b = row.decide(t, 0.9, tail), clone.decide(t, 0.9, tail)
        assert a == b
        if a is not None:
            break
    assert row.flags == clone.flags and row.flags["stop_phase"] == "B"


# -- the batched rule against the per-row reference ----------------------------------------
from lengthctl.base import REASONS, RowwiseBatch, TokenText  # noqa: E402
from lengthctl.duet import DuetBatch, marker_chars  # noqa: E402

PIECES = [FILLER, "\\boxed{", "7", "}", "1", " ", "=", "Final answer: ", "<answer>", "</answer>",
          "#", "## Final Answer", "{", "T", "Therefore, the answer is ", "]", "\\boxed[", "`",
          "<eos>"]
EOS_ID = len(PIECES) - 1
TEXT = TokenText(PIECES[:-1] + [""], lambda ids: "".join(PIECES[i] for i in ids if i != EOS_ID))


def random_streams(rng, n_rows, max_len):
    """Token-id streams rich in markers and near-markers, each with an EOS somewhere or none."""
    weights = np.ones(len(PIECES) - 1)
    weights[0] = 0.6 * max_len                          # mostly filler, markers now and then
    streams = rng.choice(len(PIECES) - 1, size=(n_rows, max_len), p=weights / weights.sum())
    for r in range(n_rows):
        if rng.random() < 0.5:
            streams[r, rng.integers(1, max_len)] = EOS_ID
        if rng.random() < 0.5:                          # a whole \boxed{7} somewhere
            at = rng.integers(0, max_len - 3)
            streams[r, at:at + 3] = [1, 2, 3]
    return streams


def drive_batch(controllers, streams, margins, max_len):
    """Drive the rows in lockstep like the hf engine: live rows only, only at due positions."""
    batch = type(controllers[0]).batch(controllers, TEXT)
    n = len(controllers)
    finish, n_tokens = ["max_len"] * n, [max_len] * n
    alive = np.ones(n, dtype=bool)
    asked = 0
    for t in range(max_len):
        live = np.flatnonzero(alive)
        if not len(live):
            break
        codes = np.zeros(len(live), dtype=np.int8)
        if t >= batch.next_position():
            asked += 1
            codes = batch.decide(live, np.full(len(live), t), streams[live, :t],
                                 lambda k, live=live, t=t: margins[live[k], t])
        for k, r in enumerate(live):
            if codes[k]:
                finish[r], n_tokens[r] = REASONS[int(codes[k])], t + 1
                alive[r] = False
            elif streams[r, t] == EOS_ID:
                finish[r], n_tokens[r] = "eos", t + 1
                alive[r] = False
    # the weight rides on the flags so that the reference comparison below pins it too
    return finish, n_tokens, [{**batch.flags(i), "weight": batch.weight(i)} for i in range(n)], \
        asked


@pytest.mark.parametrize("max_len, options", [
    (32, {}), (48, {}), (128, {}), (128, {"check_interval": 3, "hysteresis": 3}),
    (128, {"markers": [r"=\s*1"]}),                      # a user marker: no character filter
    (400, {"eps_len": 0.5, "eps_abort": 0.5}),
])
def test_batched_rule_equals_the_per_row_reference_on_random_streams(max_len, options):
    rng = np.random.default_rng(max_len + len(options))
    controller = DuetStop(max_len, 0, **options)
    n_rows = 120
    streams = random_streams(rng, n_rows, max_len)
    margins = rng.choice([0.0, 0.3, 0.6, 0.8, 0.95, float("nan")], size=(n_rows, max_len),
                         p=[0.1, 0.1, 0.2, 0.3, 0.25, 0.05])
    taus = rng.choice([None, 0.5, 0.7, 0.9], size=n_rows)
    seeds = rng.integers(0, 2**31, size=n_rows)

    def rows():
        return [controller.row_controller(0, None if tau is None else {"tau": tau}, int(seed))
                for tau, seed in zip(taus, seeds)]

    finish, n_tokens, flags, asked = drive_batch(rows(), streams, margins, max_len)
    pieces = [[PIECES[i] if i != EOS_ID else EOS for i in s] for s in streams]
    reference = [Run(row, pieces[i], max_len, margins=lambda t, i=i: margins[i, t])
                 for i, row in enumerate(rows())]
    assert finish == [r.finish for r in reference]
    assert n_tokens == [r.n_tokens for r in reference]
    assert flags == [{**r.flags, "weight": r.weight} for r in reference]
    assert len(set(finish)) >= 3, "the streams should exercise several outcomes"
    # the per-row adapter is the same rule asked at every position
    wrapped = RowwiseBatch(rows(), TEXT)
    assert isinstance(wrapped, RowwiseBatch)
    if not options.get("markers") and options.get("check_interval") is None:
        assert asked < max_len, "the batch should skip positions where nothing is due"


def test_marker_characters_cover_every_builtin_marker():
    for domain in ("math", "code", "generic"):
        chars = marker_chars(domain)
        for text in ("\\boxed{12}", "\\boxed[3]", "## Final Answer", "Final answer: 7",
                     "<answer>4</answer>", "Therefore, the answer is 5", "```py\nx\n```"):
            if find_marker(text, domain):
                assert any(c in text for c in chars), (domain, text)
    assert marker_chars("math", [r"\d+"]) is None


def test_batch_decodes_only_windows_holding_a_marker_character():
    decoded = []
    text = TokenText(TEXT.pieces, lambda ids: decoded.append(list(ids)) or TEXT.decode(ids))
    controller = DuetStop(128, 0)
    rows = [controller.row_controller(0, None, s) for s in range(4)]
    batch = DuetBatch(rows, text)
    history = np.zeros((4, 60), dtype=np.int64)
    history[2, 50:53] = [1, 2, 3]                        # only row 2 holds "}" at t = 60
    codes = batch.decide(np.arange(4), np.full(4, 60), history, lambda k: np.full(len(k), 0.0))
    assert len(decoded) == 1 and decoded[0][6:9] == [1, 2, 3]     # the window 44..59
    assert batch.flags(2)["saw_marker"] and not batch.flags(0)["saw_marker"]
    assert codes.tolist() == [0, 0, 0, 0]
