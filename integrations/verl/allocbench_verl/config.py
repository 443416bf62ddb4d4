"""The verl settings the plugin needs, read and checked before any work (one-line refusals).

Options live in ``trainer.v1.sampler.sampler_kwargs`` (verl hands the sampler nothing else):
``method`` (an AllocBench method name), ``prompts_per_step`` (M), ``group_size`` (G),
``budget_fraction`` (b), ``steps``, ``seed``, ``pool_size`` (rows of the training file),
``max_rounds``, ``score_truncated`` (default false: a truncated response scores 0, the presets'
rule) and ``options`` (the method's own options, as ``--set METHOD.NAME=V`` takes them).
``max_response_tokens`` and ``normalize_std`` are taken from verl's own settings so the two can
never disagree.
"""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from allocbench_verl.adapter import AllocationSession, RefusedMethod

ESTIMATOR = "allocbench"
SAMPLER = "AllocBenchReplayBuffer"


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else value


def session_options(config) -> dict:
    kwargs = dict(_plain(config.trainer.v1.sampler.get("sampler_kwargs", None)) or {})
    kwargs.setdefault("max_response_tokens", int(config.data.max_response_length))
    kwargs.setdefault("normalize_std",
                      bool(config.algorithm.get("norm_adv_by_std_in_grpo", True)))
    return kwargs


def check_config(config, session: AllocationSession) -> None:
    """Refuse, in one line each, the verl settings under which the session's step would not be
    the shared loop's."""
    def refuse(what: str) -> None:
        raise RefusedMethod(f"allocbench-verl: {what}")

    if not config.trainer.get("use_v1", True):
        refuse("trainer.use_v1 must be true (the plugin extends verl's v1 trainer)")
    v1 = config.trainer.v1
    if v1.trainer_mode != "sync":
        refuse(f"trainer.v1.trainer_mode={v1.trainer_mode} (an allocator plans on-policy steps: "
               f"use sync)")
    if int(v1.get("sync", {}).get("parameter_sync_step", 1)) != 1:
        refuse("trainer.v1.sync.parameter_sync_step must be 1 (one allocation step = one update)")
    custom = v1.sampler.get("custom_sampler", None) or {}
    if custom.get("name") != SAMPLER:
        refuse(f"trainer.v1.sampler.custom_sampler.name must be {SAMPLER} (the sampler runs the "
               f"method's step)")
    if config.algorithm.adv_estimator != ESTIMATOR:
        refuse(f"algorithm.adv_estimator must be {ESTIMATOR} (the shared loop's advantage rules "
               f"and per-row weights)")
    if config.algorithm.get("use_kl_in_reward", False):
        refuse("algorithm.use_kl_in_reward must be false (the methods read verifier rewards; "
               "use the actor's KL loss)")
    filt = config.algorithm.get("filter_groups", None)
    if filt is not None and filt.get("enable", False):
        refuse("algorithm.filter_groups.enable must be false (DAPO's filter is the dapo method)")
    correction = config.algorithm.get("rollout_correction", None) or {}
    if correction.get("bypass_mode", False):
        refuse("algorithm.rollout_correction.bypass_mode must be false: verl then recomputes "
               "every row's old log-probs with the current actor, as rows kept from an earlier "
               "step need (Pilot-Commit's stale pilots)")
    if getattr(session.allocator.opts, "stale_logprobs", "recompute") != "recompute":
        refuse("stale_logprobs must be 'recompute': verl recomputes every row's old log-probs, "
               "so the sampler's cannot be kept per row")
    gen = config.data.get("gen_batch_size", None)
    if gen not in (None, 1) and int(gen) != 1:
        refuse(f"data.gen_batch_size={gen}: must be 1 so follow-up rounds can draw any number of "
               f"fresh prompts")
    loop = config.actor_rollout_ref.rollout.agent.default_agent_loop
    if loop != "single_turn_agent":
        refuse(f"agent loop {loop}: only single_turn_agent (one response per rollout)")
    if int(config.data.max_response_length) != session.setting.max_response_tokens:
        refuse("sampler_kwargs.max_response_tokens differs from data.max_response_length")
