"""The shared GRPO loop: policy, engines, tasks, verifiers, loss, statistics, ledger, checkpoints."""

# Every testbed (its task mix, presets and warm start) is declared before any module of the loop
# reads one: the testbeds import trainer.config, which reads the mixes they register, so the
# registration is done here, once, rather than by a lookup inside trainer.config (a circle).
from trainer.testbeds import discover as _discover_testbeds  # noqa: E402

_discover_testbeds()
