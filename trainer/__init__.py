"""The shared GRPO loop: policy, engines, tasks, verifiers, loss, statistics, ledger, checkpoints."""
