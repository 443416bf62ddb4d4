"""ARRoL's online rollout pruning: a quality head scores each partial rollout at ``l_detect``
tokens and prunes rows of each group so that the survivors are closer to correctness-balanced.

Paper: Xu, Chen, Qiu, Yan, Luo, Cheng, He, Tong, "Prune as You Generate: Online Rollout Pruning
for Faster and Better RLVR" (ARRoL, *Accelerating RLVR via online RoLlout pruning*), arXiv
2603.24840, ACL 2026.  Official code: github.com/Hsu1023/ARRoL @ fe9ad20 holds only a README
("code and data soon").  What could be read of the paper here is its abstract, its
introduction's opening and secondary summaries; its §4.3 is known through the quotation in
DUET's comparator (``Haoyu-Hu/DUET@82bd6f4``, ``src/verl_runtime/verl/workers/rollout/
vllm_rollout/arrol_vllm_patch.py``): the backend evaluates a rollout's quality and samples a
pruning decision according to a survival probability, and pruned rollouts leave the request
pool at once.  DUET's re-implementation (``ray_trainer.py`` L750-808, L899-947, L2934-3097,
L4296-4449) gives the configuration; its head modules (``duet.arrol_head``,
``duet.arrol_faithful_head``) are not public.  The rule is a run option: method ``arrol``
(``allocators/arrol.py``) runs it with uniform GRPO counts, and any allocator can run it with
``--set METHOD.length=arrol`` (hf engine only); docs/METHODS.md §ARRoL is the specification.

What the sources say (provenance tags as in docs/ALGORITHMS.md §Conventions)
----------------------------------------------------------
* A lightweight quality head, trained on the fly on verifier labels, predicts the success
  probability of a partial rollout and drives early pruning [paper abstract]; it reads the
  policy's hidden state at ``l_detect`` [code: DUET's notes on the paper and its "faithful"
  path, which captures that state inside vLLM].
* Pruning steers the surviving rollouts toward a target positive ratio, usually 0.5 [paper
  abstract; 2nd]; each decision is *sampled* from a survival probability [paper §4.3 as quoted].
* Pruned rollouts leave the request pool; the rest are re-batched for log-probability
  computation and the policy update [paper abstract, §4.3 as quoted].
* DUET's configuration [code]: ``l_detect = 512`` of 3,072 tokens, head hidden width 128,
  warm-up 20 steps, ``κ = 0.5`` (printed as ``target_keep_rate``: the share of rows that
  survive), ``ρ = 0.5`` (target positive share), 20 calibration bins over a history of 2,048
  rows (raw scores until 16 are stored), ε-exploration 0.05, labels ``reward > 0.5``.
* UNKNOWN (no source reachable here): the survival-probability formula and how κ, ρ and the
  bins enter it, the head's depth, activation and optimiser, the calibration method, and what
  happens to rows that finish before ``l_detect``.

What is implemented (the equations of this module)
--------------------------------------------------
1. Features at ``l_detect`` (``features``): ``"hidden"`` (default, the paper's): the policy's
   last-layer hidden state that produces the logits of position ``l_detect`` (the engine runs
   that one forward pass with ``output_hidden_states``; ``lengthctl.base``: ``needs_hidden``);
   ``"logprobs"`` (DUET's stand-in [code]): ``(mean ℓ, std ℓ, min ℓ, max ℓ)`` of the sampled
   tokens' log-probs ``ℓ_1..ℓ_L`` over the first ``L = l_detect`` tokens
   (:func:`logprob_features`, from the engine's ``logprobs(k)``); ``"both"``: the two side by
   side.  The row's feature vector is kept in its flags (``arrol_features``) for the head.
2. Head (:class:`QualityHead`): ``z = (x - μ) / σ`` (μ, σ of the history), ``h = tanh(W1 z +
   b1)`` with 128 units, ``score = sigmoid(w2·h + b2)``; binary cross-entropy plus
   ``l2 ||W||²``, Adam, trained after every step on mini-batches drawn from a replay history of
   the last 2,048 labelled rows [width, history: code; the rest: harness].  A row is scored on
   its own (:meth:`QualityHead.score` loops over rows), so its score does not depend on which
   rows share its batch.
3. Calibration (:func:`fit_calibration`): 20 equal-width bins of the raw score on [0, 1]; each
   bin's rate ``(positives + m·ȳ) / (count + m)`` (``m = 1`` pseudo-row at the history's mean
   label ``ȳ``), made non-decreasing by pooling adjacent violators weighted by ``count + m``;
   ``q = table[bin(score)]``, fitted on the current head's scores of the history after each
   update [bins, history: code; smoothing and isotonic pooling: harness, so that ``q`` is
   monotone in the score].
4. Survival (:func:`survival_probabilities`), per group of the ``n`` rows alive at ``l_detect``
   with calibrated ``q_i``: expected positives ``P = Σ q_i``, negatives ``N = n - P``,
   survivors wanted ``K = κ n``;

       a = min(1, ρK / P)                     (keep rate of the positive mass)
       b = min(1, (K - aP)⁺ / N)              (the remaining places go to the negative mass)
       a = min(1, max(a, (K - bN) / P))       (negatives ran short: positives fill the places)
       s_i = ε + (1 - ε) (a q_i + b (1 - q_i))

   so that ``E[survivors] = aP + bN = K`` before the ε floor, with as close to ``ρK`` of the
   expected positive mass among them as ``K`` allows: a group predicted balanced or all one way
   keeps each row at rate κ, a skewed one keeps its minority class preferentially, and the
   survivors' expected positive share lies between the group's and ρ.  ``s_i`` is the chance
   that row ``i`` survives when its unknown class is drawn from ``q_i`` and kept at its class's
   rate [harness reconstruction of "samples a pruning decision according to the survival
   probability"; κ, ρ, ε from DUET's configuration].
5. Decision (:func:`prune_group`): row ``i`` is pruned iff ``u_i >= s_i``, ``u_i`` the first
   uniform of ``numpy.random.default_rng(row_seed)``; if fewer than ``min_keep = 2`` rows of a
   group would survive, the pruned ones with the largest ``s_i`` (then the smallest ``u_i``,
   then the smallest seed) survive instead, so that the group keeps a baseline [harness].  A
   decision depends only on the row's group and the rows' own streams, never on batch order
   (:func:`decide_groups`).
6. Warm-up: no pruning before step ``warmup_steps = 20`` [code] and before the head has been
   trained once on at least ``min_history = 16`` rows [harness; 16 is DUET's calibration
   threshold].  Until then every row runs to EOS / ``L_max``; with hidden-state features the
   rows still record their state at ``l_detect`` for the head.

A pruned row ends at ``l_detect`` with a forced EOS (``finish = "aborted"``, flag
``arrol_pruned``, typed field ``Rollout.pruned``): its ``l_detect + 1`` tokens (the EOS
included) are charged to the ledger like every generated token, the engine drops it from the
batch and the KV cache (the paper's request-pool removal), and the loop removes it from its group
after ``select`` (``trainer/step.py``: pruned rows never train), so it enters neither the update
nor the group's mean and std (the paper's re-batching of the survivors).
``pruned_in_baseline = true`` leaves ``Rollout.pruned`` unset: the row stays in its group as an
aborted row (no gradient, in the mean and std), the harness's rule for DUET's aborted rows -- an
ablation, not the paper.  Its verifier reward is computed by the loop like every row's and read by nothing:
the head never trains on a pruned row's label (the paper never finishes one).  Survivors keep
weight 1 (no importance correction; none is described).

Defaults and provenance
-----------------------
* ``l_detect = round_half_up(L_max · 512 / 3072)`` (docs/ALGORITHMS.md §Scaling, exact rationals), floor
  1; ``absolute=True`` takes 512; an int ``l_detect`` wins over both.  ``L_max = 60``
  (noisy-chain) gives 10, ``40`` (smoke) 7, ``3072`` 512.
* ``head_hidden = 128``, ``warmup_steps = 20``, ``keep_rate κ = 0.5``, ``target_positive
  ρ = 0.5``, ``n_bins = 20``, ``history = 2048``, ``eps_exploration = 0.05`` [code, DUET];
  ``features = "hidden"`` [paper, via DUET's notes].
* ``lr = 1e-3`` (Adam), ``updates_per_step = 50`` mini-batches of ``batch_size = 128``,
  ``l2 = 1e-4`` [harness: DUET's stand-in uses lr 1e-6 and its faithful path 3e-4, with update
  schedules that are not public; at 1e-6 a fresh numpy head would not leave its initial
  prediction within a 60-step run].
* ``min_history = 16`` [code: DUET's calibration threshold], ``min_keep = 2`` [harness],
  labels ``reward > 0.5`` [code].

Departures and choices where the sources are silent
---------------------------------------------------
* Rows that end (EOS) before ``l_detect`` are never pruned -- nothing is left to save -- and
  are not part of their group's decision.  With log-prob features they train the head with
  their features over all their tokens (DUET's stand-in does the same, ``L_eff = min(L, T)``);
  with hidden-state features they have no state at ``l_detect`` and do not train it.
* Only the ``hf`` engine runs the rule: the vLLM logits processor hands batches neither the
  sampled log-probs nor hidden states, and asks rows at their own positions.
  ``hf_engine_only`` makes the loop refuse another engine at set-up; :meth:`ArrolRow.decide`
  refuses a per-row call (the decision is per group).
* The engine keeps a prompt's rows in one chunk (``HFEngine._chunks``), so a group is decided
  whole; only a group of more than ``max_batch_rows`` rows (512 by default) is split, and then
  decided per part.
* DUET's re-implementation masks predicted-fail rows after generation (their rewards set to 0,
  the rows kept in the batch) and draws each row's survival alone; here rows are pruned
  mid-generation, per group, as the paper describes.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from core.options import Options, option
from lengthctl import register
from lengthctl.base import ABORTED, LengthController, RowBatch, RowController
from lengthctl.duet import scale_token_constant

RELEASED_L_DETECT = 512               # [code] DUET arrol.l_detect, of L_max = 3072
FEATURES = ("logprob_mean", "logprob_std", "logprob_min", "logprob_max")
PRUNED_FLAG = "arrol_pruned"          # diagnostic flag: the rule cut this row at l_detect
FEATURES_FLAG = "arrol_features"      # the head's input row recorded at l_detect
_NEVER = np.iinfo(np.int64).max


# ----------------------------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------------------------

def logprob_features(logprobs: np.ndarray, lengths: Sequence[int] | np.ndarray | None = None
                     ) -> np.ndarray:
    """Equation 1: ``(mean, std, min, max)`` of each row's first ``lengths[k]`` log-probs.

    ``logprobs`` is ``(rows, columns)``; ``lengths`` defaults to every column.  A row with no
    token gets zeros (DUET's safe default)."""
    logprobs = np.asarray(logprobs, dtype=np.float64)
    if logprobs.ndim != 2:
        raise ValueError(f"logprob_features: need a 2-D array, got shape {logprobs.shape}")
    rows, cols = logprobs.shape
    lengths = np.full(rows, cols) if lengths is None else \
        np.minimum(np.asarray(lengths, dtype=np.int64), cols)
    out = np.zeros((rows, len(FEATURES)))
    for k in range(rows):
        values = logprobs[k, :lengths[k]]
        if len(values):
            out[k] = (values.mean(), values.std(), values.min(), values.max())
    return out


def rollout_features(logprobs: np.ndarray, l_detect: int) -> np.ndarray:
    """One finished row's features over its first ``min(l_detect, length)`` tokens."""
    values = np.asarray(logprobs, dtype=np.float64)[:l_detect]
    return logprob_features(values[None, :])[0]


# ----------------------------------------------------------------------------------------------
# The quality head: a one-hidden-layer MLP in numpy, trained by Adam on binary cross-entropy
# ----------------------------------------------------------------------------------------------

def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))          # overflow-free


class QualityHead:
    """Equation 2: ``sigmoid(w2 · tanh(W1 (x - μ) / σ + b1) + b2)``."""

    def __init__(self, n_features: int, hidden: int = 128, *, seed: int = 0, lr: float = 1e-3,
                 l2: float = 1e-4) -> None:
        rng = np.random.default_rng(seed)
        self.params = {
            "W1": rng.normal(0.0, 1.0 / math.sqrt(n_features), (n_features, hidden)),
            "b1": np.zeros(hidden),
            "w2": rng.normal(0.0, 1.0 / math.sqrt(hidden), hidden),
            "b2": np.zeros(1),
        }
        self.lr, self.l2 = float(lr), float(l2)
        self.mu = np.zeros(n_features)
        self.sd = np.ones(n_features)
        self._m = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._v = {k: np.zeros_like(v) for k, v in self.params.items()}
        self._t = 0

    def _hidden(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.mu) / self.sd
        return np.tanh(z @ self.params["W1"] + self.params["b1"])

    def score(self, x: np.ndarray) -> np.ndarray:
        """Raw success scores in (0, 1) of feature rows ``x`` (``(rows, features)``).

        Row by row, so that a row's score is the same bits whatever else is scored with it
        (a matrix product's blocking depends on the number of rows): decisions stay
        independent of batch composition."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        out = np.empty(len(x))
        for k in range(len(x)):
            out[k] = self._score_one(x[k])
        return out

    def _score_one(self, x: np.ndarray) -> float:
        P = self.params
        h = np.tanh(((x - self.mu) / self.sd) @ P["W1"] + P["b1"])
        return float(_sigmoid(np.array(h @ P["w2"] + P["b2"][0])))

    def set_scaling(self, x: np.ndarray) -> None:
        """μ, σ of the features the head trains on (σ floored at 1e-6)."""
        x = np.asarray(x, dtype=np.float64)
        self.mu = x.mean(axis=0)
        self.sd = np.maximum(x.std(axis=0), 1e-6)

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        p = np.clip(self.score(x), 1e-12, 1 - 1e-12)
        y = np.asarray(y, dtype=np.float64)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    def train_batch(self, x: np.ndarray, y: np.ndarray) -> None:
        """One Adam step on the mean binary cross-entropy of ``(x, y)`` plus ``l2 ||W||²``."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        P = self.params
        h = self._hidden(x)
        p = _sigmoid(h @ P["w2"] + P["b2"][0])
        d_logit = (p - y) / len(y)                       # d BCE / d logit
        grads = {"w2": h.T @ d_logit + 2 * self.l2 * P["w2"], "b2": np.array([d_logit.sum()])}
        d_pre = np.outer(d_logit, P["w2"]) * (1.0 - h ** 2)
        z = (x - self.mu) / self.sd
        grads["W1"] = z.T @ d_pre + 2 * self.l2 * P["W1"]
        grads["b1"] = d_pre.sum(axis=0)
        self._t += 1
        beta1, beta2 = 0.9, 0.999
        for key, g in grads.items():
            self._m[key] = beta1 * self._m[key] + (1 - beta1) * g
            self._v[key] = beta2 * self._v[key] + (1 - beta2) * g * g
            m_hat = self._m[key] / (1 - beta1 ** self._t)
            v_hat = self._v[key] / (1 - beta2 ** self._t)
            P[key] = P[key] - self.lr * m_hat / (np.sqrt(v_hat) + 1e-8)

    def fit(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator, *, updates: int,
            batch_size: int) -> None:
        """``updates`` Adam steps on mini-batches drawn from ``(x, y)`` (with replacement)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if not len(x):
            return
        self.set_scaling(x)
        size = min(batch_size, len(x))
        for _ in range(updates):
            pick = rng.integers(0, len(x), size)
            self.train_batch(x[pick], y[pick])

    def copy(self) -> "QualityHead":
        clone = QualityHead.__new__(QualityHead)
        clone.__dict__.update({k: v for k, v in self.__dict__.items()
                               if k not in ("params", "_m", "_v", "mu", "sd")})
        clone.params = {k: v.copy() for k, v in self.params.items()}
        clone._m = {k: v.copy() for k, v in self._m.items()}
        clone._v = {k: v.copy() for k, v in self._v.items()}
        clone.mu, clone.sd = self.mu.copy(), self.sd.copy()
        return clone


# ----------------------------------------------------------------------------------------------
# Calibration
# ----------------------------------------------------------------------------------------------

def pool_adjacent_violators(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted least-squares non-decreasing fit of ``values`` (isotonic regression)."""
    blocks: list[list[float]] = []                  # [mean, weight, count]
    for v, w in zip(np.asarray(values, float), np.asarray(weights, float)):
        blocks.append([v, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, c2 = blocks.pop()
            v1, w1, c1 = blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    return np.concatenate([np.full(int(c), v) for v, _, c in blocks]) if blocks else np.zeros(0)


def bin_index(scores: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin of each score on [0, 1] (1.0 falls in the last bin)."""
    return np.clip((np.asarray(scores, dtype=np.float64) * n_bins).astype(np.int64), 0,
                   n_bins - 1)


def fit_calibration(scores: np.ndarray, labels: np.ndarray, n_bins: int = 20,
                    prior_weight: float = 1.0) -> np.ndarray:
    """Equation 3: the monotone per-bin success rate of ``scores`` (``n_bins`` values)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    prior = float(labels.mean()) if len(labels) else 0.5
    index = bin_index(scores, n_bins)
    count = np.bincount(index, minlength=n_bins).astype(np.float64)
    positive = np.bincount(index, weights=labels, minlength=n_bins)
    weight = count + prior_weight
    rate = (positive + prior_weight * prior) / weight
    return pool_adjacent_violators(rate, weight)


def calibrate(scores: np.ndarray, table: np.ndarray | None) -> np.ndarray:
    """``q = table[bin(score)]``; the raw scores when there is no table yet."""
    scores = np.asarray(scores, dtype=np.float64)
    if table is None:
        return scores
    return np.asarray(table)[bin_index(scores, len(table))]


# ----------------------------------------------------------------------------------------------
# The group decision
# ----------------------------------------------------------------------------------------------

def survival_probabilities(q: np.ndarray, *, keep_rate: float = 0.5,
                           target_positive: float = 0.5, eps: float = 0.05) -> np.ndarray:
    """Equation 4: each row's chance to survive, from its group's calibrated success
    probabilities ``q`` (module docstring)."""
    q = np.clip(np.asarray(q, dtype=np.float64), 0.0, 1.0)
    n = len(q)
    if n == 0:
        return np.zeros(0)
    positive = math.fsum(q.tolist())         # order-free sums: the decision ignores row order
    negative = n - positive
    wanted = keep_rate * n
    a = 1.0 if positive <= 0 else min(1.0, target_positive * wanted / positive)
    b = 1.0 if negative <= 0 else min(1.0, max(0.0, wanted - a * positive) / negative)
    if positive > 0:
        a = min(1.0, max(a, (wanted - b * negative) / positive))
    survive = a * q + b * (1.0 - q)
    return eps + (1.0 - eps) * survive


def prune_group(survival: np.ndarray, uniforms: np.ndarray, seeds: Sequence[int] | None = None,
                *, min_keep: int = 2) -> np.ndarray:
    """Equation 5: which rows of one group are pruned (``True``): ``u_i >= s_i``, then the
    pruned rows with the largest ``s_i`` (smallest ``u_i``, earliest seed) survive until
    ``min(min_keep, n)`` rows do."""
    survival = np.asarray(survival, dtype=np.float64)
    uniforms = np.asarray(uniforms, dtype=np.float64)
    pruned = uniforms >= survival
    short = min(min_keep, len(survival)) - int((~pruned).sum())
    if short > 0:
        seeds = np.arange(len(survival)) if seeds is None else np.asarray(seeds)
        candidates = np.flatnonzero(pruned)
        order = np.lexsort((seeds[candidates], uniforms[candidates], -survival[candidates]))
        pruned[candidates[order[:short]]] = False
    return pruned


def decide_groups(groups: Sequence, q: np.ndarray, uniforms: np.ndarray, seeds: Sequence[int],
                  *, keep_rate: float = 0.5, target_positive: float = 0.5, eps: float = 0.05,
                  min_keep: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Equations 4-5 for many groups at once: ``(survival, pruned)`` per row; rows with equal
    ``groups`` entries form one group, whatever their positions."""
    q = np.asarray(q, dtype=np.float64)
    uniforms = np.asarray(uniforms, dtype=np.float64)
    seeds = np.asarray(seeds)
    survival = np.zeros(len(q))
    pruned = np.zeros(len(q), dtype=bool)
    members: dict = {}
    for k, g in enumerate(groups):
        members.setdefault(g, []).append(k)
    for rows in members.values():
        rows = np.asarray(rows)
        rows = rows[np.argsort(seeds[rows], kind="stable")]     # canonical order inside a group
        s = survival_probabilities(q[rows], keep_rate=keep_rate, target_positive=target_positive,
                                   eps=eps)
        survival[rows] = s
        pruned[rows] = prune_group(s, uniforms[rows], seeds[rows], min_keep=min_keep)
    return survival, pruned


def row_uniform(row_seed: int) -> float:
    """The row's own uniform for its pruning draw."""
    return float(np.random.default_rng(row_seed).random())


# ----------------------------------------------------------------------------------------------
# The length controller
# ----------------------------------------------------------------------------------------------

FEATURE_MODES = ("hidden", "logprobs", "both")


@dataclass(frozen=True, eq=False)
class _Gate:
    """What one step's rows share: the head snapshot, the calibration and the constants.
    ``prune=False`` (warm-up): the rows' features are recorded for the head, nothing is cut.
    Compared by identity: one rule batch per step's gate."""

    head: QualityHead | None
    table: np.ndarray | None
    l_detect: int
    features: str
    prune: bool
    keep_rate: float
    target_positive: float
    eps: float
    min_keep: int
    leave_group: bool = True          # pruned rows leave their group's baseline (paper)


class ArrolRow(RowController):
    """One rollout under ARRoL's rule; decided with its group by :class:`ArrolBatch`."""

    __slots__ = ("_gate", "group", "seed")

    def __init__(self, gate: _Gate, group, row_seed: int) -> None:
        self._gate = gate
        self.group = group
        self.seed = int(row_seed)

    def decide(self, t, margin, tail):
        raise NotImplementedError("arrol: the pruning decision is per group; it needs the hf "
                                  "engine's batched rule (lengthctl.base.RowBatch)")

    def batch_key(self):
        return (ArrolRow, self._gate)

    @classmethod
    def batch(cls, controllers, text) -> "ArrolBatch":
        return ArrolBatch(controllers, text)


def row_features(mode: str, logprobs: np.ndarray | None, lengths: np.ndarray | None,
                 hidden: np.ndarray | None) -> np.ndarray:
    """The head's input rows for feature ``mode``: the last-layer hidden state at ``l_detect``
    (``hidden``), the four log-prob summaries (``logprobs``), or both side by side."""
    parts = []
    if mode in ("hidden", "both"):
        parts.append(np.asarray(hidden, dtype=np.float64))
    if mode in ("logprobs", "both"):
        parts.append(logprob_features(logprobs, lengths))
    return np.concatenate(parts, axis=1)


class ArrolBatch(RowBatch):
    """Every row of one generation chunk: at ``l_detect``, features, head, calibration and the
    per-group draw for the rows still alive; nothing asked before or after."""

    def __init__(self, controllers, text) -> None:
        super().__init__(controllers, text)
        gate = controllers[0]._gate
        if any(c._gate is not gate for c in controllers):
            raise ValueError("arrol: one batch needs rows of one step's gate")
        self.gate = gate
        self.needs_hidden = gate.features in ("hidden", "both")
        n = len(controllers)
        self.groups = [c.group if c.group is not None else ("row", c.seed) for c in controllers]
        self.seeds = np.array([c.seed for c in controllers], dtype=np.int64)
        self.decided = np.zeros(n, dtype=bool)
        self.pruned = np.zeros(n, dtype=bool)
        self.q = np.full(n, np.nan)
        self.survival = np.full(n, np.nan)
        self.features: dict[int, np.ndarray] = {}
        self._next = gate.l_detect

    def next_position(self) -> int:
        return self._next

    def decide(self, rows, positions, history, margins, logprobs=None, hidden=None):
        g = self.gate
        rows = np.asarray(rows, dtype=np.int64)
        positions = np.asarray(positions, dtype=np.int64)
        out = np.zeros(len(rows), dtype=np.int8)
        due = np.flatnonzero((positions >= g.l_detect) & ~self.decided[rows])
        if len(due):
            values = lengths = states = None
            if g.features in ("logprobs", "both"):
                if logprobs is None:
                    raise ValueError("arrol: the engine must hand the rule the sampled log-probs")
                values = np.asarray(logprobs(due), dtype=np.float64)[:, :g.l_detect]
                lengths = np.minimum(positions[due], g.l_detect)
            if g.features in ("hidden", "both"):
                if hidden is None:
                    raise ValueError("arrol: the engine must hand the rule the hidden states at "
                                     "l_detect (lengthctl.base: needs_hidden)")
                states = hidden(due)
            x = row_features(g.features, values, lengths, states)
            r = rows[due]
            for k, row in enumerate(r.tolist()):
                self.features[row] = x[k].astype(np.float32)
            self.decided[r] = True
            if g.prune:
                self.q[r] = calibrate(g.head.score(x), g.table)
                uniforms = np.array([row_uniform(int(s)) for s in self.seeds[r]])
                survival, pruned = decide_groups(
                    [self.groups[i] for i in r], self.q[r], uniforms, self.seeds[r],
                    keep_rate=g.keep_rate, target_positive=g.target_positive, eps=g.eps,
                    min_keep=g.min_keep)
                self.survival[r] = survival
                self.pruned[r] = pruned
                out[due[pruned]] = ABORTED
        self._next = _NEVER                 # one decision per row, at l_detect
        return out

    def flags(self, i: int) -> dict:
        scored = bool(self.decided[i]) and self.gate.prune
        return {
            PRUNED_FLAG: bool(self.pruned[i]),
            "arrol_decided": scored,
            "arrol_q": float(self.q[i]) if scored else None,
            "arrol_survival": float(self.survival[i]) if scored else None,
            FEATURES_FLAG: self.features.get(i),
        }

    def row_fields(self, i: int) -> dict:
        return {"pruned": bool(self.pruned[i]) and self.gate.leave_group}

    def weight(self, i: int) -> float:
        return 1.0


@dataclass(frozen=True)
class ArrolOptions(Options):
    features: str = option("hidden", "what the quality head reads at l_detect: the policy's "
                           "last-layer hidden state (paper), the four log-prob summaries "
                           "(DUET's stand-in), or both", choices=FEATURE_MODES)
    l_detect: int | None = option(None, "tokens generated before the quality head decides; "
                                  "null = L_max / 6 (512 of 3072)", ge=1)
    absolute: bool = option(False, "use the released l_detect = 512 instead of scaling it")
    head_hidden: int = option(128, "hidden units of the quality head", ge=1)
    warmup_steps: int = option(20, "steps before any pruning (the head only trains)", ge=0)
    keep_rate: float = option(0.5, "kappa: expected share of a group that survives", gt=0,
                              le=1)
    target_positive: float = option(0.5, "rho: target share of correct rows among survivors",
                                    ge=0, le=1)
    n_bins: int = option(20, "calibration bins of the head's score", ge=1)
    history: int = option(2048, "labelled rows kept for training and calibration", ge=1)
    eps_exploration: float = option(0.05, "floor of every row's survival probability", ge=0,
                                    le=1)
    min_history: int = option(16, "labelled rows before calibration and pruning start", ge=1)
    min_keep: int = option(2, "fewest survivors of a group", ge=0)
    lr: float = option(1e-3, "Adam learning rate of the head", gt=0)
    l2: float = option(1e-4, "weight decay of the head", ge=0)
    updates_per_step: int = option(50, "head mini-batch updates after each step", ge=0)
    batch_size: int = option(128, "head mini-batch size", ge=1)
    pruned_in_baseline: bool = option(False, "keep pruned rows in their group's mean and std "
                                      "(no gradient); false = drop them, as the paper does")


@register("arrol")
class ArrolPrune(LengthController):
    """ARRoL's online pruning at ``l_detect`` (module docstring), with its quality head."""

    Options = ArrolOptions
    hf_engine_only = True

    def __init__(self, max_response_tokens: int, seed: int, **options: Any) -> None:
        super().__init__(max_response_tokens, seed, **options)
        o = self.opts
        if o.l_detect is not None:
            self.l_detect = int(o.l_detect)
        elif o.absolute:
            self.l_detect = RELEASED_L_DETECT
        else:
            self.l_detect = scale_token_constant(RELEASED_L_DETECT, 1, max_response_tokens)
        self.head: QualityHead | None = None      # built at the first data (its input width)
        self.features: deque = deque(maxlen=o.history)
        self.labels: deque = deque(maxlen=o.history)
        self.table: np.ndarray | None = None
        self.steps_trained = 0
        self._make_gates()

    def _make_gates(self) -> None:
        o = self.opts
        head = None if self.head is None else self.head.copy()
        table = None if self.table is None else self.table.copy()
        self._gates = {prune: _Gate(head, table, self.l_detect, o.features, prune, o.keep_rate,
                                    o.target_positive, o.eps_exploration, o.min_keep,
                                    not o.pruned_in_baseline)
                       for prune in (False, True)}

    def active(self, step: int) -> bool:
        """Whether rows of ``step`` may be pruned: past the warm-up, with a trained head."""
        return (step >= self.opts.warmup_steps and self.steps_trained > 0
                and len(self.labels) >= self.opts.min_history)

    def row_controller(self, step, control, row_seed, group=None):
        if self.l_detect >= self.max_response_tokens:
            return None                      # no row is alive at l_detect
        if not self.active(step) and self.opts.features == "logprobs":
            return None                      # warm-up: features come from the stored log-probs
        # warm-up with hidden features: the row records its state at l_detect, nothing is cut
        return ArrolRow(self._gates[self.active(step)], group, int(row_seed))

    # -- after the step ----------------------------------------------------------------------
    def step_metrics(self, rollouts: list) -> dict:
        decided = [r for r in rollouts if r.flags.get("arrol_decided")]
        pruned = [r for r in decided if r.flags.get(PRUNED_FLAG)]
        kept = [r for r in decided if not r.flags.get(PRUNED_FLAG)]
        metrics = {"decided": len(decided), "pruned": len(pruned),
                   "prune_rate": len(pruned) / len(decided) if decided else 0.0,
                   "pruned_tokens": sum(r.n_tokens for r in pruned),
                   "history": len(self.labels), "l_detect": self.l_detect,
                   "head_steps": self.steps_trained}
        if decided:
            metrics["q_mean"] = float(np.mean([r.flags["arrol_q"] for r in decided]))
        if kept:
            # the head's calibrated accuracy on the survivors, before it trains on them
            hits = [(r.flags["arrol_q"] >= 0.5) == (r.reward > 0.5) for r in kept]
            metrics["head_accuracy"] = float(np.mean(hits))
            metrics["kept_reward"] = float(np.mean([r.reward for r in kept]))
        return metrics

    def example(self, rollout) -> np.ndarray | None:
        """A finished row's features for the head: those recorded at ``l_detect``, else (log-
        prob features only) its first ``min(l_detect, length)`` stored log-probs; ``None`` when
        there are none (a row that ended before ``l_detect`` under hidden-state features)."""
        recorded = rollout.flags.get(FEATURES_FLAG)
        if recorded is not None:
            return np.asarray(recorded, dtype=np.float64)
        if self.opts.features == "logprobs" and rollout.n_tokens >= 1:
            return rollout_features(rollout.logprobs, self.l_detect)
        return None

    def observe(self, step: int, rollouts: list) -> None:
        """Add every finished, unpruned row to the history; train the head; recalibrate."""
        added = 0
        for r in rollouts:
            if r.flags.get(PRUNED_FLAG):
                continue
            x = self.example(r)
            if x is None:
                continue
            self.features.append(x)
            self.labels.append(1.0 if r.reward > 0.5 else 0.0)
            added += 1
        if not added or len(self.labels) < 2:
            return
        x = np.array(self.features)
        y = np.array(self.labels)
        if self.head is None:
            self.head = QualityHead(x.shape[1], self.opts.head_hidden, seed=int(self.seed),
                                    lr=self.opts.lr, l2=self.opts.l2)
        rng = np.random.default_rng([int(self.seed) & 0xFFFFFFFF, int(step), 0xA770])
        self.head.fit(x, y, rng, updates=self.opts.updates_per_step,
                      batch_size=self.opts.batch_size)
        self.steps_trained += 1
        if len(y) >= self.opts.min_history:
            self.table = fit_calibration(self.head.score(x), y, self.opts.n_bins)
        self._make_gates()

    def resolved_options(self) -> dict:
        return {**super().resolved_options(), "max_response_tokens": self.max_response_tokens,
                "l_detect": self.l_detect}
