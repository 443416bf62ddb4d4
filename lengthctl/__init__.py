"""Rollout-length control, registered by decorator; torch-free like ``allocators``.

``max_len`` runs every rollout to EOS or the maximum response length; ``duet`` is DUET's
marker-gated abort and confidence stop; ``arrol`` is ARRoL's online pruning (a quality head
scores each row at ``l_detect`` and prunes rows of each group toward balanced correctness).  A new rule is one new file with ``@register("name")``.
As in ``allocators``, a module that fails to import is reported by name (:func:`import_errors`)
and the others still load.
"""
from __future__ import annotations

import sys

from core.registry import Registry

_REGISTRY = Registry(sys.modules[__name__], "length controller")
register = _REGISTRY.register
import_errors = _REGISTRY.import_errors
available = _REGISTRY.available
get = _REGISTRY.get
