"""The ``allocbench`` advantage estimator, registered with verl's ``core_algos.register_adv_est``.

Loaded through the ``verl.plugins`` entry point (``import verl`` imports it), so
``algorithm.adv_estimator=allocbench`` works in any verl process.  The advantages themselves
were computed by the session's step with the shared loop's function; verl hands this estimator
each row's ``uid``, which the sampler rewrote to the row's TransferQueue key, and the estimator
returns advantage x weight on every response token (``returns`` = advantages, as verl's GRPO).
"""
from __future__ import annotations

import torch

from verl.trainer.ppo import core_algos

NAME = "allocbench"


@core_algos.register_adv_est(NAME)
def allocbench_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                         index=None, config=None, **_: object):
    from allocbench_verl.adapter import get_session

    if index is None:
        raise ValueError("allocbench advantage estimator needs each row's uid (index)")
    values = get_session().row_advantages([str(k) for k in index])
    scores = torch.as_tensor(values, dtype=token_level_rewards.dtype,
                             device=token_level_rewards.device).unsqueeze(-1) * response_mask
    return scores, scores
