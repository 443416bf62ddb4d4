"""verl's agent-loop manager, subclassed: submissions come from the AllocBench session.

Point verl at it with ``actor_rollout_ref.rollout.agent.agent_loop_manager_class=
allocbench_verl.manager.AllocBenchAgentLoopManager``.  Training prompts verl's trainer submits
are not generated at once: they are queued in the session (their TransferQueue status keys
cleared), and the session's step (run by ``allocbench_verl.sampler``) decides which prompts get
how many rollouts.  Each AllocBench group is submitted as its own verl prompt with a fresh uid
and ``__rollout_n__``; :meth:`AllocBenchAgentLoopManager.dispatch` waits for the round in
TransferQueue and hands the trajectories back.  Validation batches pass through untouched.
"""
from __future__ import annotations

import time

import torch
import transfer_queue as tq
from tensordict import NonTensorStack, TensorDict

from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ
from verl.utils import tensordict_utils as tu

from allocbench_verl.adapter import AllocationSession, Submission, open_session
from allocbench_verl.config import check_config, session_options
from allocbench_verl.convert import prompt_rows, trajectory_rows

PARTITION = "train"


class AllocBenchAgentLoopManager(AgentLoopManagerTQ):
    poll_interval = 0.2

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        self._sources: dict[int, TensorDict] = {}     # pid -> its one-row prompt batch
        self.attach(open_session(session_options(config)))

    def attach(self, session: AllocationSession) -> None:
        """Generate for ``session`` (checked against this manager's verl config first)."""
        check_config(self.config, session)
        session.dispatch = self.dispatch
        self.session = session

    def generate_sequences(self, prompts: TensorDict) -> None:
        if "validate" in prompts.keys() and bool(prompts["validate"]):
            return super().generate_sequences(prompts)
        rows = prompt_rows(prompts)
        for i, (pid, _) in enumerate(rows):
            self._sources[pid] = prompts[i:i + 1]
        # the session submits these under its own uids; the trainer's status keys would
        # otherwise stay "pending" forever
        tq.kv_clear(keys=[str(u) for u in prompts["uid"]], partition_id=PARTITION)
        self.session.offer(rows)

    def dispatch(self, subs: list[Submission], step: int) -> dict:
        """Submit one round (one verl prompt per group), wait until every group is terminal,
        and return ``{uid: [(key, response tokens, reward)]}``."""
        parts = []
        for sub in subs:
            part = self._sources[sub.pid].clone()
            part["uid"] = NonTensorStack(sub.uid)
            part["__rollout_n__"] = torch.tensor([sub.n])
            parts.append(part)
        batch = parts[0] if len(parts) == 1 else tu.concat_tensordict(parts)
        batch["__rollout_n__"] = batch["__rollout_n__"].reshape(-1)
        tu.assign_non_tensor_data(batch, "global_steps", step)
        uids = [s.uid for s in subs]
        tq.kv_batch_put(keys=uids, partition_id=PARTITION,
                        tags=[{"is_prompt": True, "status": "pending", "global_steps": step}
                              for _ in uids])
        super().generate_sequences(batch)
        return trajectory_rows(self._wait(set(uids)), PARTITION)

    def _wait(self, uids: set[str]) -> dict[str, list[str]]:
        """Poll TransferQueue until every uid is finished or failed; its trajectory keys."""
        while True:
            listing = tq.kv_list(partition_id=PARTITION) or {}
            items = listing.get(PARTITION, listing)
            status = {k: t.get("status") for k, t in items.items() if t.get("is_prompt")}
            if all(status.get(u) in ("finished", "failure") for u in uids):
                keys: dict[str, list[str]] = {u: [] for u in uids}
                for k, t in items.items():
                    if not t.get("is_prompt") and k.split("_")[0] in uids:
                        keys[k.split("_")[0]].append(k)
                tq.kv_clear(keys=sorted(uids), partition_id=PARTITION)
                return keys
            time.sleep(self.poll_interval)
