"""DUET's stop rule: marker-gated abort plus confidence stop, as a per-rollout length controller.

Paper: "DUET: Optimize Budget-Token Allocation for Reinforcement Learning with Verifiable
Rewards" (DUal-controlled tokEn allocaTion), Hu, Zhao, Xu, Jacoby, arXiv 2605.08441, May 2026.
The paper body was unavailable; the official code github.com/Haoyu-Hu/DUET @ 82bd6f4 is the
reference (``src/duet/duet_logits_processor.py::DuetStopProcessor``,
``src/duet/duet_marker_detector.py``, K1/K2 refit in ``ray_trainer.py`` L4651-4663).  This module
implements docs/ALGORITHMS.md §DUET steps 9-13 and the K-window part of step 18; the weights of steps
15-16 are applied by the trainer from the row weight reported here.  The rollout-count half of DUET
(Neyman allocation, thresholds tau_q) lives in ``allocators/duet.py``.

Per-rollout state machine (t = tokens generated so far, checked before sampling position t):

* pre:     t < min_tokens: nothing.
* phase A: no marker yet.  From t >= K1, at every t with t % check_interval == 0, decode the last
           ``scan_window`` tokens and search the marker regexes.  A hit moves to phase B in the
           same call (the released processor evaluates the confidence rule on the logits of the
           very position where it detects the marker).
* phase B: marker seen.  Each position, margin = p_top1 - p_top2; a run of ``hysteresis``
           consecutive positions with margin > tau_q fires: with probability 1 - eps_len return
           "stopped" (forced EOS), with probability eps_len ignore it and set the run to h - 1
           (so the next confident position fires again).  No weight correction for eps_len, as
           released (``p_len = 1``).
* phase C: t >= K2 + grace with no marker: one last scan of the window first; if still no
           marker, with probability 1 - eps_abort return "aborted" (the trainer masks the row),
           else flag ``eps_kept`` with row weight ``1/eps_abort`` and never stop again.

The released detector only ever sees the last ``scan_window`` tokens at check positions >= K1,
so a marker emitted more than ``scan_window`` tokens before the first check is never seen
(replicated on purpose; the row then meets the phase C gate like a marker-less one).

Token-valued constants (docs/ALGORITHMS.md §Scaling): each is a fraction phi = released / 3072 of the run's
L_max, resolved once as ``min(L_max, max(floor, round_half_up(phi * L_max)))``, which reproduces
the released value at L_max = 3072 exactly:

    name             released  floor  provenance
    min_tokens          200      0    [code] run_duet.sh DUET_MIN_TOKENS
    grace               150      1    [code] run_duet.sh DUET_GRACE_WINDOW
    scan_window         256     16    [code] detector suffix_window; floor 16 [inferred] §Scaling (the
                                      released detector also floors it at 16)
    check_interval        8      1    [code] detector check_every
    refit_k1_floor       32      1    [code] ray_trainer K1 = max(32, Q_0.30)
    min_gap              50      1    [code] ray_trainer K2 = max(K1 + 50, Q_0.80)
    hysteresis            5      2    [code] run_duet.sh DUET_HYSTERESIS_K; floor h_min = 2
                                      [inferred] §Scaling (a debounce, not a length)

Initial K1 = int(0.3 * L_max), K2 = int(0.7 * L_max) with ``int()`` truncation [code].
``absolute=True`` takes the released absolute values unscaled (paper reproductions); any single
constant can also be given as an int option, which wins over both.

Scale-free defaults: eps_abort = 0.05 [code, run_duet.sh; 2nd: sensitivity over
{0.01, 0.05, 0.1, 0.2}], eps_len = 0.05 [code], stop_floor = 0.5 / ceiling 0.99 [code],
K-window 1,024 lengths [code; = M * n_ref = 128 * 8, so the trainer passes ``window = M * G``
per §Scaling [inferred]], refit every 10 steps once >= 32 lengths are stored, quantiles 0.30 / 0.80
[code].  ``default_tau`` (used when the allocator sends no ``{"tau": ...}``, e.g. DUET's stop
under another allocator) is the band midpoint (stop_floor + ceiling) / 2 = 0.745: the released
``assign_thresholds_batched`` gives a prompt with no batch to rank against exactly this value
[code]; harness choice otherwise, the source never runs the stop without a threshold.

Markers: the math set (complete ``\\boxed{...}`` with up to 2 nested brace levels, ``\\boxed[...]``,
``## Final Answer``, ``Final answer: X``) plus the generic set (``<answer>...</answer>``,
``<final_answer>...</final_answer>``, ``Therefore, the answer is X``) [code], case-sensitive as
released.  The embedded tasks of this project end their worked solutions with ``\\boxed{N}``, so the
default math set covers them; a task with another final-answer format adds its own regexes
through ``markers=[...]`` (searched with re.MULTILINE, added to the domain's set).

Departures from the released code:

* Code domain: the released set also accepts a bare closing fence (``\\n```\\s*$`` under
  re.MULTILINE), which equally matches an *opening* fence on its own line; only closed pairs
  (opening fence ... closing fence) count here, as docs/ALGORITHMS.md §DUET step 10 specifies.
* ``needs_margin`` is true in phase B and at positions where a marker scan is due, so that the
  engine computes the margin exactly where the released processor may use it and skips it
  elsewhere.  A ``nan`` margin (engine skipped it) counts as "not confident".
* Evaluation: both engines run the rule as :class:`DuetBatch`, array code over the live rows
  (the hf engine asks only at positions where some row has a check due; the vLLM processor asks
  once per engine step, rows at their own positions), decoding only the scan windows that
  hold a token containing one of the markers' characters (``MARKER_CHARS``; an exact filter, as
  every match contains that character) and computing margins only for phase-B rows.  Its
  decisions equal :class:`DuetRow`'s (the per-row reference); tests pin the two on random
  streams, in the hf engine's lockstep and under a simulated vLLM scheduler.  The released processor decodes and
  searches every live row at every check position.
* The per-row random stream is ``numpy.random.default_rng(row_seed)`` (released: Python
  ``random.Random(hash(("duet_eps_keep", base, step, row)))``); draws compare as released
  (abort when u >= eps_abort, ignore a firing when u < eps_len).
* Refit does not clamp: K1 may fall below min_tokens (harmless: nothing happens before
  min_tokens, so the first scan is at the first check position >= max(K1, min_tokens)), and
  K2 + grace may reach L_max, which switches the abort gate off until a later refit lowers K2 -
  both exactly as released.  Construction-time values must satisfy
  ``min_tokens <= K1 < K2 + grace < L_max`` (else ValueError).
"""
from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Iterable

import numpy as np

from core.options import Options, option
from lengthctl import register
from lengthctl.base import ABORTED, CONTINUE, STOPPED, LengthController, RowBatch, RowController

RELEASED_MAX_RESPONSE_TOKENS = 3072

# name: (released value at L_max = 3072, floor of the scaled value); see the module docstring
TOKEN_CONSTANTS: dict[str, tuple[int, int]] = {
    "min_tokens": (200, 0),
    "grace": (150, 1),
    "scan_window": (256, 16),
    "check_interval": (8, 1),
    "refit_k1_floor": (32, 1),
    "min_gap": (50, 1),
    "hysteresis": (5, 2),
}

_BOXED_BRACES = r"\\boxed\{(?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*\}"   # <= 2 nested levels
MATH_MARKERS = (
    _BOXED_BRACES,
    r"\\boxed\[[^\[\]]*\]",
    r"##\s*Final\s+Answer",
    r"Final\s+answer\s*[:=]\s*\S",
)
CODE_MARKERS = (
    r"```\w+[\s\S]*?```",          # opening fence with a language tag ... closing fence
    r"```[\s\S]*?\n```",           # any opening fence ... closing fence at a line start
)
GENERIC_MARKERS = (
    r"<answer>[\s\S]*?</answer>",
    r"<final_answer>[\s\S]*?</final_answer>",
    r"(?:^|\s)Therefore,\s+the\s+answer\s+is\s+\S",
)
DOMAIN_MARKERS: dict[str, tuple[str, ...]] = {
    "math": MATH_MARKERS + GENERIC_MARKERS,
    "code": CODE_MARKERS + GENERIC_MARKERS,
    "generic": GENERIC_MARKERS + MATH_MARKERS,
}
# A character that every match of the marker contains (read off each regex: a literal outside
# any optional part).  A row whose scan window holds no token with one of its markers'
# characters cannot match, so the batched rule skips decoding it; the set is the one token-level
# fact the rule needs, found by id lookups.  User regexes have no entry: with any of them the
# rule decodes every due window.
MARKER_CHARS: dict[str, str] = {
    MATH_MARKERS[0]: "}", MATH_MARKERS[1]: "]", MATH_MARKERS[2]: "#", MATH_MARKERS[3]: "F",
    CODE_MARKERS[0]: "`", CODE_MARKERS[1]: "`",
    GENERIC_MARKERS[0]: ">", GENERIC_MARKERS[1]: ">", GENERIC_MARKERS[2]: "T",
}


def marker_chars(domain: str = "math", extra: Iterable[str] = ()) -> str | None:
    """The characters one of which every marker match of ``domain`` holds; None with ``extra``."""
    if tuple(extra):
        return None
    return "".join(sorted({MARKER_CHARS[p] for p in DOMAIN_MARKERS[domain]}))


def compile_markers(domain: str = "math", extra: Iterable[str] = ()) -> re.Pattern:
    """One alternation of the domain's marker regexes plus ``extra`` (searched, MULTILINE)."""
    if domain not in DOMAIN_MARKERS:
        raise ValueError(f"marker domain must be one of {sorted(DOMAIN_MARKERS)}, got {domain!r}")
    patterns = DOMAIN_MARKERS[domain] + tuple(extra)
    for p in extra:
        re.compile(p)   # a bad user regex should name itself, not the whole alternation
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.MULTILINE)


_COMPILED_DOMAINS = {domain: compile_markers(domain) for domain in DOMAIN_MARKERS}


def find_marker(text: str, domain: str = "math") -> bool:
    """Whether ``text`` holds a complete verifier-readable answer marker of ``domain``."""
    if domain not in _COMPILED_DOMAINS:
        raise ValueError(f"marker domain must be one of {sorted(DOMAIN_MARKERS)}, got {domain!r}")
    return _COMPILED_DOMAINS[domain].search(text) is not None


def scale_token_constant(released: int, floor: int, max_response_tokens: int) -> int:
    """docs/ALGORITHMS.md §Scaling: min(L_max, max(floor, round_half_up(released / 3072 * L_max)))."""
    # exact rationals, so that ties (5 * 1536 / 3072 = 2.5) round up by arithmetic, not by float luck
    scaled = Fraction(released * max_response_tokens, RELEASED_MAX_RESPONSE_TOKENS)
    rounded = math.floor(scaled + Fraction(1, 2))
    return min(max_response_tokens, max(floor, rounded))


# row phases; indices into PHASE_NAMES
_PRE, _SCAN, _MARKER, _LATE_KEPT, _STOPPED, _ABORTED = range(6)
PHASE_NAMES = ("pre", "A", "B", "C", "B", "C")


class _Gates:
    """The constants one step's rows share (K1/K2 change only between steps)."""

    __slots__ = ("min_tokens", "k1", "late_gate", "check_interval", "scan_window",
                 "hysteresis", "eps_abort", "eps_len", "markers", "marker_chars")

    def __init__(self, *, min_tokens, k1, late_gate, check_interval, scan_window, hysteresis,
                 eps_abort, eps_len, markers, marker_chars=None):
        self.min_tokens = min_tokens
        self.k1 = k1
        self.late_gate = late_gate          # K2 + grace
        self.check_interval = check_interval
        self.scan_window = scan_window
        self.hysteresis = hysteresis
        self.eps_abort = eps_abort
        self.eps_len = eps_len
        self.markers = markers
        self.marker_chars = marker_chars    # None: every due window is decoded

    def periodic_scan(self, t: int) -> bool:
        return t >= self.k1 and t > 0 and t % self.check_interval == 0

    def scan_due(self, t: int) -> bool:
        """Whether a row without a marker decodes its tail at ``t``."""
        return t >= self.min_tokens and (self.periodic_scan(t) or t >= self.late_gate)


class DuetRow(RowController):
    """One rollout's stop state machine (module docstring); its own random stream."""

    __slots__ = ("_gates", "tau", "_seed", "_rng", "_phase", "_confident_run", "_next_t",
                 "_marker_at")

    def __init__(self, gates: _Gates, tau: float, row_seed: int) -> None:
        self._gates = gates
        self.tau = tau
        self._seed = row_seed
        self._rng = None                    # created on the first draw; most rows never draw
        self._phase = _PRE
        self._confident_run = 0
        self._next_t = 0
        self._marker_at = None

    # -- what the engine reads -----------------------------------------------------------
    @property
    def needs_margin(self) -> bool:
        phase = self._phase
        if phase == _MARKER:
            return True
        return phase <= _SCAN and self._gates.scan_due(self._next_t)

    @property
    def weight(self) -> float:
        return 1.0 / self._gates.eps_abort if self._phase == _LATE_KEPT else 1.0

    @property
    def flags(self) -> dict:
        return {
            "saw_marker": self._marker_at is not None,
            "marker_at": self._marker_at,
            "eps_kept": self._phase == _LATE_KEPT,
            "stop_phase": PHASE_NAMES[self._phase],
        }

    @property
    def row_fields(self) -> dict:
        return {"kept_by_chance": self._phase == _LATE_KEPT}

    # -- the rule ------------------------------------------------------------------------
    def decide(self, t: int, margin: float, tail: Callable[[int], str]) -> str | None:
        self._next_t = t + 1
        phase = self._phase
        if phase == _MARKER:
            return self._confidence_step(margin)
        if phase > _SCAN:
            return None                     # eps-kept rows run free; ended rows stay ended
        gates = self._gates
        if t < gates.min_tokens:
            return None
        self._phase = _SCAN
        scanned = gates.periodic_scan(t)
        if scanned and self._scan(t, tail):
            return self._confidence_step(margin)
        if t >= gates.late_gate:
            # the released "last full check": a marker completed between two periodic checks
            if not scanned and self._scan(t, tail):
                return self._confidence_step(margin)
            return self._late_gate_draw()
        return None

    def _scan(self, t: int, tail: Callable[[int], str]) -> bool:
        if self._gates.markers.search(tail(self._gates.scan_window)) is None:
            return False
        self._phase = _MARKER
        self._marker_at = t
        return True

    def _confidence_step(self, margin: float) -> str | None:
        # nan > tau is False: a position without a margin never counts as confident
        if margin > self.tau:
            self._confident_run += 1
        else:
            self._confident_run = 0
        gates = self._gates
        if self._confident_run < gates.hysteresis:
            return None
        if self._draw() < gates.eps_len:
            self._confident_run = gates.hysteresis - 1
            return None
        self._phase = _STOPPED
        return "stopped"

    def _late_gate_draw(self) -> str | None:
        if self._draw() >= self._gates.eps_abort:
            self._phase = _ABORTED
            return "aborted"
        self._phase = _LATE_KEPT
        return None

    def _draw(self) -> float:
        if self._rng is None:
            self._rng = np.random.default_rng(self._seed)
        return float(self._rng.random())

    # -- the batched rule ------------------------------------------------------------------
    def batch_key(self):
        return (DuetRow, self._gates)

    @classmethod
    def batch(cls, controllers, text) -> "DuetBatch":
        return DuetBatch(controllers, text)


class DuetBatch(RowBatch):
    """:class:`DuetRow`'s state machine for many rows at once, as array code.

    Positions where nothing is due are never asked (:meth:`next_position`); at a due position
    the marker scan decodes only the windows that hold a token with one of the markers'
    characters (``MARKER_CHARS``), margins are requested only for rows in phase B or whose scan
    just found a marker, and each row's uniforms are drawn from its own stream in the order the
    per-row reference draws them, so every decision equals :class:`DuetRow`'s (pinned by
    tests/test_duet_stop.py on random streams)."""

    def __init__(self, controllers, text) -> None:
        super().__init__(controllers, text)
        gates = controllers[0]._gates
        if any(c._gates is not gates for c in controllers):
            raise ValueError("duet: one batch needs rows of one step's gates")
        self.gates = gates
        n = len(controllers)
        self.tau = np.array([c.tau for c in controllers], dtype=np.float64)
        self.seeds = [c._seed for c in controllers]
        self.phase = np.full(n, _PRE, dtype=np.int8)
        self.run = np.zeros(n, dtype=np.int64)
        self.marker_at = np.full(n, -1, dtype=np.int64)
        self.rngs: dict[int, np.random.Generator] = {}
        self.trigger = (text.ids_containing(gates.marker_chars)
                        if gates.marker_chars is not None else None)
        self._next = gates.min_tokens

    def next_position(self) -> int:
        return self._next

    def _draw(self, row: int) -> float:
        rng = self.rngs.get(row)
        if rng is None:
            rng = self.rngs[row] = np.random.default_rng(self.seeds[row])
        return float(rng.random())

    def _found(self, history, positions, due) -> np.ndarray:
        """Which ``due`` rows hold a marker in their last ``scan_window`` tokens."""
        g = self.gates
        found = np.zeros(len(due), dtype=bool)
        if not due.any():
            return found
        starts = np.maximum(positions - g.scan_window, 0)
        candidates = due.copy()
        if self.trigger is not None:
            rows = np.flatnonzero(due)
            lo, hi = int(starts[rows].min()), int(positions[rows].max())
            ids = history[rows, lo:hi]              # only the columns some window covers
            cols = np.arange(lo, hi)
            window = (cols >= starts[rows, None]) & (cols < positions[rows, None])
            known = ids < len(self.trigger)         # an id beyond the tokenizer: decode it
            hits = np.where(known, self.trigger[np.where(known, ids, 0)], True) & window
            candidates[rows] = hits.any(axis=1)
        decode, search = self.text.decode, g.markers.search
        for k in np.flatnonzero(candidates):
            ids = history[k, starts[k]:positions[k]].tolist()
            found[k] = search(decode(ids)) is not None
        return found

    def decide(self, rows, positions, history, margins, logprobs=None):
        g = self.gates
        rows = np.asarray(rows, dtype=np.int64)
        positions = np.asarray(positions, dtype=np.int64)
        out = np.zeros(len(rows), dtype=np.int8)
        phase = self.phase[rows]
        phase[(phase == _PRE) & (positions >= g.min_tokens)] = _SCAN
        scanning = phase == _SCAN
        periodic = (positions >= g.k1) & (positions > 0) & (positions % g.check_interval == 0)
        late = positions >= g.late_gate
        due = scanning & (periodic | late)
        found = self._found(history, positions, due)
        phase[found] = _MARKER
        self.marker_at[rows[found]] = positions[found]

        confident = np.flatnonzero(phase == _MARKER)
        if len(confident):
            values = np.asarray(margins(confident), dtype=np.float64)
            crows = rows[confident]
            # nan > tau is False: a position without a margin never counts as confident
            run = np.where(values > self.tau[crows], self.run[crows] + 1, 0)
            for j in np.flatnonzero(run >= g.hysteresis):
                if self._draw(int(crows[j])) < g.eps_len:
                    run[j] = g.hysteresis - 1
                else:
                    phase[confident[j]] = _STOPPED
                    out[confident[j]] = STOPPED
            self.run[crows] = run
        for k in np.flatnonzero(due & late & ~found):
            if self._draw(int(rows[k])) >= g.eps_abort:
                phase[k] = _ABORTED
                out[k] = ABORTED
            else:
                phase[k] = _LATE_KEPT
        self.phase[rows] = phase
        self._next = self._next_due(phase, positions)
        return out

    def _next_due(self, phase, positions) -> int:
        """The smallest position after these at which one of these rows has a check due."""
        g = self.gates
        after = positions + 1
        big = np.iinfo(np.int64).max
        if len(after):
            # a row waiting on its margin is due at its next position, and no row is due
            # before its own next one: when such a row is among the earliest, that is the answer
            # (every step after a marker, so the general case below runs rarely)
            earliest = after.min()
            if (phase[after == earliest] == _MARKER).any():
                return int(earliest)
        nxt = np.full(len(phase), big, dtype=np.int64)
        nxt[phase == _MARKER] = after[phase == _MARKER]
        pre = phase == _PRE
        nxt[pre] = np.maximum(after[pre], g.min_tokens)
        scan = phase == _SCAN
        if scan.any():
            start = np.maximum(after[scan], max(g.k1, 1))
            periodic = -(-start // g.check_interval) * g.check_interval
            nxt[scan] = np.minimum(periodic, np.maximum(after[scan], g.late_gate))
        return int(nxt.min()) if len(nxt) else big

    def flags(self, i: int) -> dict:
        phase = int(self.phase[i])
        eps_kept = phase == _LATE_KEPT
        return {
            "saw_marker": bool(self.marker_at[i] >= 0),
            "marker_at": int(self.marker_at[i]) if self.marker_at[i] >= 0 else None,
            "eps_kept": eps_kept,
            "stop_phase": PHASE_NAMES[phase],
        }

    def row_fields(self, i: int) -> dict:
        return {"kept_by_chance": int(self.phase[i]) == _LATE_KEPT}

    def weight(self, i: int) -> float:
        return 1.0 / self.gates.eps_abort if int(self.phase[i]) == _LATE_KEPT else 1.0


@dataclass(frozen=True)
class DuetStopOptions(Options):
    absolute: bool = option(False, "use the released token constants as they are instead of "
                            "scaling them to L_max")
    min_tokens: int | None = option(None, "no stop before this many tokens; null = scaled "
                                    "from 200 at L_max 3072", ge=0)
    grace: int | None = option(None, "tokens past K2 before the late gate; null = scaled "
                               "from 150", ge=0)
    scan_window: int | None = option(None, "tokens searched for the answer marker; null = "
                                     "scaled from 256", ge=1)
    check_interval: int | None = option(None, "tokens between marker checks; null = scaled "
                                        "from 8", ge=1)
    refit_k1_floor: int | None = option(None, "floor of the refitted K1; null = scaled "
                                        "from 32", ge=0)
    min_gap: int | None = option(None, "least K2 - K1 after a refit; null = scaled from 50",
                                 ge=0)
    hysteresis: int | None = option(None, "confident checks in a row before a stop; null = "
                                    "scaled from 5", ge=1)
    k1_fraction: float = option(0.3, "initial K1 as a fraction of L_max", ge=0, le=1)
    k2_fraction: float = option(0.7, "initial K2 as a fraction of L_max", ge=0, le=1)
    eps_abort: float = option(0.05, "chance that a row due for abort is kept anyway", ge=0,
                              le=1)
    eps_len: float = option(0.05, "chance that a confident stop (after the marker) is "
                            "ignored once, so the row runs on", ge=0,
                            le=1)
    stop_floor: float = option(0.5, "lowest stop threshold", ge=0, le=1)
    stop_ceiling: float = option(0.99, "highest stop threshold", ge=0, le=1)
    default_tau: float | None = option(None, "threshold of rows without one; null = the band "
                                       "midpoint", ge=0, le=1)
    window: int = option(1024, "kept lengths in the K1/K2 refit window", ge=1)
    refit_every: int = option(10, "steps between K1/K2 refits", ge=1)
    refit_min_lengths: int = option(32, "lengths the window needs before a refit", ge=1)
    k1_quantile: float = option(0.30, "K1 = this quantile of the window", ge=0, le=1)
    k2_quantile: float = option(0.80, "K2 = this quantile of the window", ge=0, le=1)
    domain: str = option("math", "answer-marker family", choices=tuple(DOMAIN_MARKERS))
    markers: tuple[str, ...] = option((), "extra answer-marker regexes")


@register("duet")
class DuetStop(LengthController):
    """DUET's marker-gated abort and confidence stop (module docstring), with the K1/K2 refit."""

    Options = DuetStopOptions

    def __init__(self, max_response_tokens: int, seed: int, **options: Any) -> None:
        super().__init__(max_response_tokens, seed, **options)
        o = self.opts
        for name in TOKEN_CONSTANTS:
            setattr(self, name, self._resolve_token_constant(name, getattr(o, name)))
        if not o.stop_floor <= o.stop_ceiling:
            raise ValueError(f"duet: stop_floor {o.stop_floor} > stop_ceiling {o.stop_ceiling}")
        self.default_tau = (o.default_tau if o.default_tau is not None
                            else (o.stop_floor + o.stop_ceiling) / 2.0)
        self.marker_regex = compile_markers(o.domain, o.markers)

        # int() truncation of the float product, as the released trainer computes it
        self.k1 = int(self.opts.k1_fraction * max_response_tokens)
        self.k2 = int(self.opts.k2_fraction * max_response_tokens)
        self.initial_k1, self.initial_k2 = self.k1, self.k2
        self._check_gate_order()
        self.lengths: deque[int] = deque(maxlen=self.opts.window)
        self.last_refit_step = -1            # released: first refit once step - (-1) >= 10
        self._gates = self._make_gates()

    def _resolve_token_constant(self, name: str, explicit: int | None) -> int:
        if explicit is not None:
            return int(explicit)
        released, floor = TOKEN_CONSTANTS[name]
        if self.opts.absolute:
            return released
        return scale_token_constant(released, floor, self.max_response_tokens)

    def _check_gate_order(self) -> None:
        chain = (self.min_tokens, self.k1, self.k2 + self.grace, self.max_response_tokens)
        if not (chain[0] <= chain[1] < chain[2] < chain[3]):
            raise ValueError(
                "duet: need min_tokens <= K1 < K2 + grace < L_max, got "
                f"{chain[0]} <= {chain[1]} < {self.k2} + {self.grace} < {chain[3]} "
                "(otherwise the abort gate never fires)")

    def _make_gates(self) -> _Gates:
        return _Gates(min_tokens=self.min_tokens, k1=self.k1, late_gate=self.k2 + self.grace,
                      check_interval=self.check_interval, scan_window=self.scan_window,
                      hysteresis=self.hysteresis, eps_abort=self.opts.eps_abort,
                      eps_len=self.opts.eps_len, markers=self.marker_regex,
                      marker_chars=marker_chars(self.opts.domain, self.opts.markers))

    # -- per rollout ---------------------------------------------------------------------
    def row_controller(self, step: int, control: dict | None, row_seed: int,
                       group: int | None = None) -> DuetRow:
        tau = self.default_tau if not control or control.get("tau") is None else control["tau"]
        tau = float(tau)
        if math.isnan(tau):
            raise ValueError("duet: tau is nan")
        return DuetRow(self._gates, tau, int(row_seed))

    # -- across steps --------------------------------------------------------------------
    def step_metrics(self, rollouts: list) -> dict:
        """Rows kept by chance at the abort gate, and the gates the step generated with."""
        return {"eps_kept": sum(bool(r.flags.get("eps_kept")) for r in rollouts), **self.gates()}

    def observe(self, step: int, rollouts: list) -> None:
        """Append kept lengths to the K-window; refit K1/K2 every ``refit_every`` steps."""
        self.lengths.extend(r.n_tokens for r in rollouts if r.finish != "aborted")
        due = step - self.last_refit_step >= self.opts.refit_every
        if due and len(self.lengths) >= self.opts.refit_min_lengths:
            self.k1, self.k2 = refit_gates(
                np.fromiter(self.lengths, dtype=np.int64, count=len(self.lengths)),
                k1_quantile=self.opts.k1_quantile, k2_quantile=self.opts.k2_quantile,
                k1_floor=self.refit_k1_floor, min_gap=self.min_gap)
            self.last_refit_step = step
            self._gates = self._make_gates()

    def gates(self) -> dict:
        """The current gates (what the next step's rows run with), for per-step metrics."""
        return {"k1": self.k1, "k2": self.k2, "late_gate": self.k2 + self.grace,
                "abort_reachable": self.k2 + self.grace < self.max_response_tokens,
                "window_lengths": len(self.lengths)}

    def resolved_options(self) -> dict:
        return {
            **super().resolved_options(), "max_response_tokens": self.max_response_tokens,
            **{name: getattr(self, name) for name in TOKEN_CONSTANTS},
            "initial_k1": self.initial_k1, "initial_k2": self.initial_k2,
            "default_tau": self.default_tau,
            "markers": list(DOMAIN_MARKERS[self.opts.domain] + self.opts.markers),
        }


def refit_gates(lengths: np.ndarray, *, k1_quantile: float = 0.30, k2_quantile: float = 0.80,
                k1_floor: int = 32, min_gap: int = 50) -> tuple[int, int]:
    """K1 = max(floor, int(Q_k1)), K2 = max(K1 + gap, int(Q_k2)) of the kept-length window."""
    k1 = max(k1_floor, int(np.quantile(lengths, k1_quantile)))
    k2 = max(k1 + min_gap, int(np.quantile(lengths, k2_quantile)))
    return k1, k2
