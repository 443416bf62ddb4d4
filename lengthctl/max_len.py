"""The baseline length rule: every rollout runs to its natural EOS or the maximum length."""
from lengthctl import register
from lengthctl.base import LengthController


@register("max_len")
class MaxLength(LengthController):
    pass
