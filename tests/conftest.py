"""Shared test set-up: offline hub, a per-session warm-start cache, CPU threads."""
import os
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("ALLOCBENCH_CACHE", str(Path(tempfile.gettempdir()) / "allocbench-test-cache"))

from tests import warnings_guard  # noqa: E402

warnings_guard.install()     # before the libraries are imported: some bind warnings.warn then

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


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
