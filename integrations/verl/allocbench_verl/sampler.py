"""verl's replay buffer, subclassed: one ``sample`` = one AllocBench step.

Point verl at it with ``trainer.v1.sampler.custom_sampler.path=<this file>`` and
``trainer.v1.sampler.custom_sampler.name=AllocBenchReplayBuffer``.  ``sample`` runs the session's
step (plan -> follow-up rounds -> select -> advantages -> observe, ``trainer.step.run_step``)
through the manager's rollout, then hands verl the trained rows: their TransferQueue ``uid``
field is rewritten to the row's own key, which is how the ``allocbench`` advantage estimator
(``allocbench_verl.estimator``) finds each row's advantage and weight.

An allocation step that trains no group (DAPO or Pilot-Commit out of rounds) is a step without
an update in the shared loop; verl cannot update on an empty batch, so the next allocation step
runs inside the same verl step (at most ``max_empty_steps``, then a clear error): the method's
step count can run ahead of verl's ``global_steps`` (logged as ``allocbench/step``).

Rows a method does not train are removed from TransferQueue as soon as the method lets go of
them (weak references: SPEED-RL's queue and Pilot-Commit's pilot buffer keep rows across steps,
and those rows' trajectories stay until they train or are dropped).
"""
from __future__ import annotations

import gc
import weakref

import transfer_queue as tq
from tensordict import NonTensorStack, TensorDict
from transfer_queue import KVBatchMeta

from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

from allocbench_verl.adapter import get_session

PARTITION = "train"


class AllocBenchReplayBuffer(ReplayBuffer):
    max_empty_steps = 10
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._held: list[tuple[weakref.ref, str]] = []

    def sample(self, global_steps: int, partition_id: str, batch_size: int):
        if partition_id != PARTITION:
            return super().sample(global_steps, partition_id, batch_size)
        session = get_session()
        session.draw_more = self.refill_fn
        # an allocation step that trains nothing (DAPO or Pilot-Commit out of rounds with no
        # usable group) is a step without an update in the shared loop; verl cannot update on
        # an empty batch, so the next allocation step runs inside the same verl step
        for _ in range(self.max_empty_steps):
            generated = session.run(global_steps)
            keys = list(session.trained)
            trained = set(keys)
            # verl clears trained rows at the end of the step; the rest wait for the method
            self._held = [(ref, key) for ref, key in self._held if key not in trained]
            self._held.extend((weakref.ref(r), session.key_of(r)) for r in generated.rows
                              if session.key_of(r) not in trained)
            del generated
            self._release()
            if keys:
                break
        else:
            raise RuntimeError(f"allocbench: method {session.method!r} trained no group in "
                               f"{self.max_empty_steps} allocation steps (verl step "
                               f"{global_steps})")
        listing = tq.kv_list(partition_id=PARTITION) or {}
        items = listing.get(PARTITION, listing)
        missing = [k for k in keys if k not in items]
        if missing:
            raise RuntimeError(f"allocbench: {len(missing)} trained rows are no longer in "
                               f"TransferQueue (e.g. {missing[0]})")
        tq.kv_batch_put(keys=keys, partition_id=PARTITION,
                        fields=TensorDict({"uid": NonTensorStack(*keys)}, batch_size=len(keys)))
        meta = KVBatchMeta(partition_id=PARTITION, keys=keys, tags=[items[k] for k in keys])
        return meta, session.step_metrics()

    def _release(self) -> None:
        """Clear the trajectories of untrained rows no method state refers to any more."""
        gc.collect()
        dead = [key for ref, key in self._held if ref() is None]
        self._held = [(ref, key) for ref, key in self._held if ref() is not None]
        if dead:
            tq.kv_clear(keys=dead, partition_id=PARTITION)
