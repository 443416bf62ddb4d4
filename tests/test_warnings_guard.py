"""Deprecation warnings from our own calls fail the tests; the engine makes none (issue 17)."""
import types
import warnings

import pytest
import torch
from transformers import DynamicCache

from trainer.engine import HFEngine, RowSpec, cache_argument


def _module(name: str, source: str, **names) -> types.ModuleType:
    """A stand-in for a third-party package: its frames carry ``__name__`` = ``name``."""
    module = types.ModuleType(name)
    module.__dict__.update(names)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module


libb = _module("libb", "import warnings\n"
                       "def old():\n"
                       "    warnings.warn('old() is deprecated', DeprecationWarning, stacklevel=2)\n")
liba = _module("liba", "def uses_old():\n    libb.old()\n", libb=libb)


def test_a_deprecated_library_call_from_our_code_is_an_error():
    with pytest.raises(DeprecationWarning, match="old"):
        libb.old()


def test_a_library_calling_another_librarys_deprecated_api_stays_a_warning():
    with pytest.warns(DeprecationWarning, match="old") as record:
        liba.uses_old()
    assert record[0].filename == "<liba>"           # attributed as the library chose


def test_the_transformers_cache_deprecation_through_module_call_is_caught(smoke_policy):
    model, tokenizer = smoke_policy
    if cache_argument(model) == "past_key_values":
        pytest.skip("this transformers version takes only past_key_values: nothing deprecated")
    ids = torch.tensor([tokenizer("1 + 2 =\n")["input_ids"]])
    with pytest.raises(FutureWarning, match="past_key_values"):
        model(input_ids=ids, past_key_values=DynamicCache(), use_cache=True)
    model(input_ids=ids, cache=DynamicCache(), use_cache=True)       # the supported name


def test_the_engine_generates_without_any_deprecation_warning(smoke_policy):
    model, tokenizer = smoke_policy
    engine = HFEngine(model, tokenizer, max_new_tokens=8)
    prompt = tuple(tokenizer("3 + 4 =\n")["input_ids"])
    with warnings.catch_warnings():
        for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
            warnings.simplefilter("error", category)
        out = engine.generate([RowSpec(prompt, seed=s) for s in range(4)])
    assert len(out) == 4 and all(1 <= len(g.tokens) <= 8 for g in out)
