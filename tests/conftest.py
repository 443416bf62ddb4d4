"""Shared test set-up: offline hub, a per-session warm-start cache, CPU threads."""
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

from tests import warnings_guard  # noqa: E402

warnings_guard.install()     # before the libraries are imported: some bind warnings.warn then

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """Each test session builds its own warm starts and embeddings: a cache shared with other
    checkouts or users would let their policy stand in for this checkout's (subprocesses the
    tests start inherit the variable).  ``ALLOCBENCH_TEST_CACHE=DIR`` reuses DIR instead, for a
    developer re-running tests on a slow machine; never set it where the result must count."""
    previous = os.environ.get("ALLOCBENCH_CACHE")
    reuse = os.environ.get("ALLOCBENCH_TEST_CACHE")
    path = Path(reuse) if reuse else tmp_path_factory.mktemp("allocbench-cache")
    os.environ["ALLOCBENCH_CACHE"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("ALLOCBENCH_CACHE", None)
    else:
        os.environ["ALLOCBENCH_CACHE"] = previous


@pytest.fixture(scope="session")
def smoke_preset():
    from bench.presets import get_preset
    return get_preset("smoke")


@pytest.fixture(scope="session")
def smoke_policy(smoke_preset):
    """The smoke preset's warm-started policy (built once per cache)."""
    from trainer.policy import load_policy
    from trainer.sft import ensure_warm_start
    path = ensure_warm_start(smoke_preset.warm_start, progress=False, log=lambda *a: None)
    model, tokenizer = load_policy(path)
    return model.eval(), tokenizer
