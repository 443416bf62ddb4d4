"""Deprecation warnings caused by our own calls become test failures.

A library's deprecation warning names the frame its ``stacklevel`` points at, which is often not
ours: transformers' ``deprecate_kwarg`` on a model's ``forward`` points at torch's
``Module.__call__``, so a ``filterwarnings`` entry on our module names never sees it.
:func:`install` wraps ``warnings.warn``: for a deprecation it walks out of the stack past the
issuing library and past plumbing (torch's ``Module.__call__``, functools, contextlib, the import
system), and if
the first frame left is in one of our packages it re-issues the warning attributed to that frame.
The ``filterwarnings`` entries in pyproject.toml (``error::FutureWarning:<our packages>``) then make
it an error, through the ordinary filter machinery -- so ``pytest.warns`` and a deliberate
``catch_warnings`` still work.  A deprecation that one library triggers in another (numpy inside
scikit-learn) stays a warning: it is not ours to fix.

Warnings issued from C (``PyErr_WarnEx``) do not pass through ``warnings.warn``; they are
attributed to the Python frame that made the call, which the same filter entries match.
"""
from __future__ import annotations

import sys
import warnings

OUR_PACKAGES = frozenset({"allocators", "lengthctl", "trainer", "bench", "tests"})
# modules that only pass a call through (full names: the rest of torch is a library like any other)
PLUMBING = frozenset({"torch.nn.modules.module", "torch.utils._contextlib", "functools",
                      "contextlib", "importlib._bootstrap", "importlib._bootstrap_external",
                      "warnings"})
DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)

_original_warn = warnings.warn


def _module(frame) -> str:
    return str(frame.f_globals.get("__name__", ""))


def _package(frame) -> str:
    return _module(frame).partition(".")[0]


def responsible_frame(issuing_frame):
    """Our frame that caused a warning issued in ``issuing_frame``, or None when the issuer is
    ours (a deliberate warning of our own) or the first frame outside the issuer and plumbing
    belongs to another library."""
    issuer = _package(issuing_frame)
    if issuer in OUR_PACKAGES:
        return None
    frame = issuing_frame
    while frame is not None and (_package(frame) == issuer or _module(frame) in PLUMBING):
        frame = frame.f_back
    return frame if frame is not None and _package(frame) in OUR_PACKAGES else None


def guarded_warn(message, category=None, stacklevel=1, source=None, **kwargs):
    if category is None:
        category = type(message) if isinstance(message, Warning) else UserWarning
    if issubclass(category, DEPRECATIONS):
        ours = responsible_frame(sys._getframe(1))
        if ours is not None:
            registry = ours.f_globals.setdefault("__warningregistry__", {})
            warnings.warn_explicit(message, category, ours.f_code.co_filename, ours.f_lineno,
                                   module=str(ours.f_globals.get("__name__")),
                                   registry=registry, module_globals=ours.f_globals,
                                   source=source)
            return
    _original_warn(message, category, stacklevel + 1, source, **kwargs)


def install() -> None:
    warnings.warn = guarded_warn
