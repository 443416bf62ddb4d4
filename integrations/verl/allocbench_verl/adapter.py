"""The one place where AllocBench's method objects meet verl: everything here speaks AllocBench.

An :class:`AllocationSession` owns one allocator, the prompt statistics and the step protocol
(``trainer.step.run_step``, the same function the shared loop and the scripted test loop run),
and translates between AllocBench's flat rows and verl's per-prompt submissions:

* **plans -> ``__rollout_n__``.**  Each :class:`~core.rows.Request` with ``n > 0`` becomes
  one verl prompt submission with a fresh uid and ``__rollout_n__ = n`` (one submission = one
  AllocBench group).  Requests with ``n = 0`` (a skip) are never submitted: verl 0.9.1 would give
  a skipped prompt a batch slot and return no rows (:func:`submissions`).
* **verl trajectories -> rows.**  Each finished trajectory becomes a :class:`Rollout` with the
  request's tag, round and weight, its response tokens, its reward (the sum of ``rm_scores``,
  the canonical pre-KL reward) and ``finish = "max_len"`` when it filled ``max_response_tokens``,
  which then scores 0 unless ``score_truncated`` (the shared loop's rule; a response whose EOS
  is exactly its last allowed token counts as truncated here, as verl reports no finish reason)
  (:func:`to_rollout`).
* **advantages.**  Computed by the shared loop's own function,
  ``trainer.grpo.assign_advantages``, with the method's ``advantage_options()`` (one-row groups:
  no gradient unless the method opts into verl's ``r / (1 + eps)``, DUET's ``small_groups``;
  Knapsack-RL's clip; Reinforce-Ada's baseline pool), then multiplied by each row's weight:
  verl 0.9.1's loss has no per-row weight, and the PPO clipped surrogate (dual clip included)
  is positively homogeneous in the advantage, so ``A * w`` equals the shared loop's
  ``w``-weighted loss for ``w > 0`` (:meth:`AllocationSession.row_advantages`).
* **what runs.**  :func:`refusal` names every method that cannot run and why, in one line,
  before any work.

Departures from the shared loop, each forced by where verl draws prompts:

* Candidates come from verl's dataloader in its order, not AllocBench's epoch-shuffled pool;
  a prompt's ``pid`` is its dataset ``extra_info.index`` (must be a stable integer in
  ``[0, pool_size)``).  Prompts verl submits beyond what the method asks for wait in a queue
  for the next draw, so no drawn prompt is lost.
* ``attach_pool`` is not called (verl streams the dataset); methods read the pool size from
  ``Setting.pool_size`` instead, which every method that needs only the size already does.
  Methods that need the whole pool's features are refused (VIP, DUET's allocation), and so
  are methods that draw no candidates and schedule pool prompts of their own (sGPO).
* Old log-probs are verl's: it recomputes every row's with the current actor before the update
  (decoupled mode), which is what Pilot-Commit's ``recompute_old_logprobs`` asks for its stale
  pilots and, on-policy, what every other row carries anyway.
"""
from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

import allocators
from allocators.base import Allocator
from core.rows import PromptInfo, PromptStats, Request, Rollout, Setting
from trainer.grpo import assign_advantages
from trainer.step import StepResult, run_step, step_budget


# Rollout.flags key holding the row's TransferQueue key (``{uid}_{session}_{index}``)
KEY_FLAG = "verl_key"


class RefusedMethod(ValueError):
    """A method (or a configuration) that cannot run inside verl; the message is one line."""


# Stop rules decide per token inside generation (DUET's abort/confidence stop, ARRoL's pruning
# at l_detect on hidden states); verl 0.9.1's rollout servers (vLLM/SGLang behind an HTTP
# client) take no per-request logits processor or hidden-state hook.
_STOP_RULE_REASON = ("its stop rule ({rule}) decides per token inside generation, and verl "
                     "0.9.1's rollout servers take no per-request stop-rule hook")


def refusal(alloc: Allocator) -> str | None:
    """Why allocator ``alloc`` cannot run inside verl, in one line, or ``None`` when it can."""
    if alloc.default_length != "max_len":
        return _STOP_RULE_REASON.format(rule=alloc.default_length)
    if alloc.control:
        return ("a control sees every candidate's pass rate from unbilled extra rollouts: a "
                "reference row of the benchmark, not a training method")
    if alloc.candidates_per_step() == 0:
        # sGPO: it draws nothing and plans pool prompts of its own choosing (a profiling pass
        # over the whole pool, then a curriculum); the plugin only holds the prompts verl drew
        return ("it schedules its own prompts from the whole training pool (a profiling pass, "
                "a curriculum), and verl's streamed dataloader hands the plugin only the prompts "
                "of each batch")
    features = tuple(alloc.needs().features)
    if features:
        return (f"it needs prompt features of the whole pool before step 0 "
                f"({', '.join(features)}), which verl's streamed dataloader does not give")
    return None


# the setting --list judges each method at (refusals depend on the method, not on these numbers)
_LIST_SETTING = Setting(prompts_per_step=8, group_size=8, budget_fraction=1.0,
                        max_response_tokens=512, steps=10, seed=0, pool_size=64)


def method_table() -> list[tuple[str, str]]:
    """(method, "runs in verl" | "refused, because ...") for every registered method."""
    out = []
    for name in allocators.available():
        why = refusal(allocators.get(name)(_LIST_SETTING))
        out.append((name, "runs in verl" if why is None else f"refused, because {why}"))
    return out


def make_allocator(method: str, setting: Setting, options: dict | None = None) -> Allocator:
    """The registered allocator ``method``, refused in one line when it cannot run in verl."""
    try:
        cls = allocators.get(method)
    except KeyError as exc:
        raise RefusedMethod(str(exc.args[0])) from None
    alloc = cls(setting, **dict(options or {}))
    why = refusal(alloc)
    if why is not None:
        raise RefusedMethod(f"method {method!r} cannot run in verl: {why}")
    return alloc


@dataclass(frozen=True)
class Submission:
    """One verl prompt submission: one AllocBench group of ``n`` rollouts of prompt ``pid``."""

    uid: str
    pid: int
    n: int
    request: Request
    round: int


def submissions(requests: list[Request], round_index: int,
                new_uid: Callable[[], str]) -> list[Submission]:
    """The verl submissions for a round's requests: one per request with ``n > 0``.

    A skipped prompt (``n = 0``) is dropped here, before it reaches verl (module docstring).
    """
    out = []
    for req in requests:
        if req.n < 0:
            raise ValueError(f"request for prompt {req.pid} has n = {req.n} < 0")
        if req.n:
            out.append(Submission(new_uid(), int(req.pid), int(req.n), req, round_index))
    return out


def to_rollout(sub: Submission, group: int, step: int, tokens: np.ndarray, reward: float,
               max_response_tokens: int, score_truncated: bool = False) -> Rollout:
    """One verl trajectory of submission ``sub`` as an AllocBench row; a truncated row scores 0
    unless ``score_truncated`` (the shared loop's rule, ``Preset.score_truncated``)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    finish = "max_len" if len(tokens) >= max_response_tokens else "eos"
    if finish == "max_len" and not score_truncated:
        reward = 0.0
    return Rollout(pid=sub.pid, group=group, tag=sub.request.tag, step=step, round=sub.round,
                   tokens=tokens, logprobs=np.zeros(len(tokens), dtype=np.float32),
                   finish=finish, reward=float(reward), weight=float(sub.request.weight))


class AllocationSession:
    """One allocator run inside verl's trainer: the step protocol with verl's generation.

    ``dispatch(subs, step)`` submits a round's groups to verl's rollout and returns, per uid,
    the finished trajectories ``[(key, tokens, reward)]``; ``draw_more(k)`` asks verl's trainer
    for ``k`` fresh prompts (they arrive through :meth:`offer`).  Both are bound by the verl
    side (``allocbench_verl.manager`` / ``allocbench_verl.sampler``), so this class never
    touches Ray or TransferQueue.
    """

    def __init__(self, method: str, *, prompts_per_step: int, group_size: int,
                 budget_fraction: float, max_response_tokens: int, steps: int, seed: int = 0,
                 pool_size: int = 0, options: dict | None = None, max_rounds: int = 10,
                 normalize_std: bool = True, score_truncated: bool = False) -> None:
        self.setting = Setting(prompts_per_step=int(prompts_per_step), group_size=int(group_size),
                               budget_fraction=float(budget_fraction),
                               max_response_tokens=int(max_response_tokens), steps=int(steps),
                               seed=int(seed), pool_size=int(pool_size))
        self.method = method
        self.allocator = make_allocator(method, self.setting, options)
        self.advantage_options = dict(self.allocator.advantage_options())
        self.normalize_std = bool(normalize_std)
        self.score_truncated = bool(score_truncated)
        self.max_rounds = int(max_rounds)
        self.stats = PromptStats()
        self.queue: list[PromptInfo] = []          # prompts verl drew that no draw took yet
        self.dispatch: Callable[[list[Submission], int], dict] | None = None
        self.draw_more: Callable[[int], None] | None = None
        # uids unique across sessions and processes sharing one TransferQueue (no "_": verl
        # splits keys on it); the trailing counter is the row's AllocBench group id
        self._uid_prefix = uuid.uuid4().hex[:12]
        self._uid_counter = 0
        self.steps_run = 0                         # allocation steps so far (0-based, as the loop)
        self.trained: dict[str, Rollout] = {}        # verl key -> trained row of the last step
        self._metrics: dict[str, float] = {}

    # -- prompts -----------------------------------------------------------------------
    def offer(self, prompts: list[tuple[int, str]]) -> None:
        """Prompts verl's dataloader drew, as ``(pid, text)`` in order; the next draws take
        them first."""
        for pid, _ in prompts:
            if self.setting.pool_size and not 0 <= pid < self.setting.pool_size:
                raise ValueError(f"prompt index {pid} outside [0, {self.setting.pool_size}): "
                                 f"set each row's extra_info.index to its position in the "
                                 f"training file")
        self.queue.extend(PromptInfo(pid=int(pid), text=text, token_ids=())
                          for pid, text in prompts)

    def draw(self, k: int) -> list[PromptInfo]:
        if k > len(self.queue) and self.draw_more is not None:
            self.draw_more(k - len(self.queue))
        taken, self.queue = self.queue[:k], self.queue[k:]
        return taken

    def new_uid(self) -> str:
        self._uid_counter += 1
        return f"ab{self._uid_prefix}{self._uid_counter:08d}"

    # -- the step ----------------------------------------------------------------------
    def run(self, verl_step: int) -> StepResult:
        """The next allocation step of the shared protocol inside verl's step ``verl_step``;
        returns its result and fills :attr:`trained`."""
        if self.dispatch is None:
            raise RuntimeError("AllocationSession.dispatch is not bound (no verl manager)")
        step = self.steps_run
        self.steps_run += 1
        def generate(requests: list[Request], round_index: int) -> list[Rollout]:
            subs = submissions(requests, round_index, self.new_uid)
            produced = self.dispatch(subs, verl_step) if subs else {}
            rows = []
            for sub in subs:
                for key, tokens, reward in produced.get(sub.uid, []):
                    row = to_rollout(sub, int(sub.uid[-8:]), step, tokens, reward,
                                     self.setting.max_response_tokens, self.score_truncated)
                    # the key travels with the row: a method may train it in a later step
                    row.flags[KEY_FLAG] = key
                    rows.append(row)
            return rows

        result = run_step(step, self.allocator, self.stats, step_budget(self.setting, self.stats), draw=self.draw,
                          generate=generate, score=lambda rows: [r.reward for r in rows],
                          advantages=self._advantages, max_rounds=self.max_rounds)
        self.trained = {self.key_of(r): r for g in result.groups for r in g}
        self._metrics = self._summarise(result)
        return result

    def _advantages(self, groups: list[list[Rollout]]):
        return assign_advantages(groups, normalize_std=self.normalize_std,
                                 **self.advantage_options)

    @staticmethod
    def key_of(row: Rollout) -> str:
        """The verl (TransferQueue) key of a row generated through verl."""
        return row.flags[KEY_FLAG]

    def row_advantages(self, keys) -> np.ndarray:
        """Advantage x weight of each trained row named by its verl key (0 for a key that is
        not a trained row, e.g. verl's padding)."""
        return np.array([self.trained[k].advantage * self.trained[k].weight if k in self.trained
                         else 0.0 for k in keys], dtype=np.float64)

    def step_metrics(self) -> dict[str, float]:
        """The last step's numbers for verl's logger (``allocbench/...``)."""
        return dict(self._metrics)

    def _summarise(self, res: StepResult) -> dict[str, float]:
        sizes = [len(g) for g in res.groups]
        out = {"allocbench/step": self.steps_run - 1, "allocbench/rounds": res.rounds, "allocbench/generated_rows": len(res.rows),
               "allocbench/trained_groups": len(res.groups),
               "allocbench/trained_rows": sum(sizes),
               "allocbench/planned_prompts": len(res.counts),
               "allocbench/queued_prompts": len(self.queue)}
        if sizes:
            out["allocbench/group_size_mean"] = float(np.mean(sizes))
        for k, v in self.allocator.step_metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out[f"allocbench/{self.method}/{k}"] = float(v)
        return out


# -- one session per trainer process, shared by the manager and the sampler ------------------
_SESSIONS: dict[str, AllocationSession] = {}


def open_session(options: dict[str, Any]) -> AllocationSession:
    """The process's session for these options (created once; the manager and the sampler
    both call this with the same ``sampler_kwargs``)."""
    options = dict(options)
    name = str(options.pop("session", "default"))
    existing = _SESSIONS.get(name)
    if existing is not None:
        return existing
    if "method" not in options:
        raise RefusedMethod("trainer.v1.sampler.sampler_kwargs.method is not set (an AllocBench "
                            "method name, e.g. knapsack)")
    session = AllocationSession(options.pop("method"), **options)
    _SESSIONS[name] = session
    return session


def get_session(name: str = "default") -> AllocationSession:
    """The session the manager opened in this process."""
    if name not in _SESSIONS:
        raise RuntimeError("no AllocBench session in this process: set "
                           "actor_rollout_ref.rollout.agent.agent_loop_manager_class="
                           "allocbench_verl.manager.AllocBenchAgentLoopManager")
    return _SESSIONS[name]


def close_sessions() -> None:
    _SESSIONS.clear()
