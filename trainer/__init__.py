"""The shared GRPO loop: policy, engines, tasks, verifiers, loss, statistics, ledger, checkpoints."""

from transformers.utils import logging as _hf_logging

# Loading and saving the small policies is instant; transformers' per-shard bars are noise.
_hf_logging.disable_progress_bar()
