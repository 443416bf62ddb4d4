"""AllocBench's rollout-allocation methods inside verl 0.9.1's v1 trainer, as a plugin.

* :mod:`allocbench_verl.adapter`   -- the translation (the only module that speaks AllocBench);
* :mod:`allocbench_verl.manager`   -- the agent-loop manager subclass (submissions, ``__rollout_n__``);
* :mod:`allocbench_verl.sampler`   -- the replay-buffer subclass (one sample = one AllocBench step);
* :mod:`allocbench_verl.estimator` -- the ``allocbench`` advantage estimator (``verl.plugins``);
* :mod:`allocbench_verl.config`    -- the verl settings it needs, refused in one line otherwise.

``python -m allocbench_verl --list`` prints which methods run in verl and why the others cannot.
"""
