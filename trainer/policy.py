"""The policy: a ``transformers`` Qwen3 causal LM and its tokenizer, built locally or loaded.

The embedded default is a small Qwen3-architecture model over a character-level tokenizer built
here with the ``tokenizers`` library (printable ASCII plus newline, and ``<|pad|>``,
``<|endoftext|>``), so nothing is downloaded.  Real presets load any local Hugging Face model
directory with ``HF_HUB_OFFLINE=1`` semantics (``local_files_only``).  :func:`save_policy` stores
the sha256 of the weights beside them, so that a reader (``bench.eval``) can refuse changed bytes.
"""
from __future__ import annotations

import json
import os
import string
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast, Qwen3Config
from transformers.utils import logging as hf_logging

from trainer.config import Architecture
from trainer.provenance import weights_sha256

# Loading and saving the small policies is instant; transformers' per-shard bars are noise.  Set
# here, where models load, not in trainer/__init__: the torch-free parts of trainer (run specs,
# run-directory files) must not pay for importing transformers.
hf_logging.disable_progress_bar()

PAD, EOS = "<|pad|>", "<|endoftext|>"
CHECKSUM_FILE = "allocbench-weights.json"


class PolicyLoadError(RuntimeError):
    """A model directory that is missing or unusable (reported as a one-line error)."""


def build_tokenizer() -> PreTrainedTokenizerFast:
    chars = [PAD, EOS] + list(string.printable[:95]) + ["\n"]
    vocab = {c: i for i, c in enumerate(dict.fromkeys(chars))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=EOS))
    # every character is its own token; newlines included
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=EOS,
                                   bos_token=None, unk_token=EOS, clean_up_tokenization_spaces=False)


def build_model(tokenizer, arch: Architecture, seed: int) -> torch.nn.Module:
    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=arch.hidden, intermediate_size=arch.intermediate,
        num_hidden_layers=arch.layers, num_attention_heads=arch.heads,
        num_key_value_heads=arch.kv_heads, head_dim=arch.hidden // arch.heads,
        max_position_embeddings=arch.max_positions, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None, rope_theta=10000.0)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model


def load_policy(path: str | os.PathLike, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) from a local directory; a clear error when it is missing or corrupt."""
    path = Path(path)
    if not path.is_dir():
        raise PolicyLoadError(f"model directory {str(path)!r} does not exist")
    if not (path / "config.json").is_file():
        raise PolicyLoadError(f"model directory {str(path)!r} has no config.json")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
    except Exception as exc:  # transformers raises many types for a broken directory
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PolicyLoadError(f"cannot load model from {str(path)!r}: {first}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def save_policy(model, tokenizer, path: str | os.PathLike) -> None:
    """Write model + tokenizer into ``path`` atomically (temp dir, then rename), with the
    sha256 of the weights (:func:`verify_policy`)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        import shutil
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / CHECKSUM_FILE).write_text(json.dumps({"weights_sha256": weights_sha256(tmp)}) + "\n")
    if path.exists():
        import shutil
        shutil.rmtree(path)
    os.replace(tmp, path)


def verify_policy(path: str | os.PathLike) -> None:
    """Raise :class:`PolicyLoadError` when the weights in ``path`` are not the ones
    :func:`save_policy` wrote; a directory saved by other tools (no record) passes."""
    record = Path(path) / CHECKSUM_FILE
    if not record.is_file():
        return
    try:
        stored = json.loads(record.read_text())["weights_sha256"]
    except (ValueError, KeyError, TypeError):
        raise PolicyLoadError(f"policy {str(path)!r} has an unreadable {CHECKSUM_FILE}") from None
    if weights_sha256(Path(path)) != stored:
        raise PolicyLoadError(f"policy {str(path)!r} is corrupt (sha256 of its weights does not "
                              f"match the one stored when it was saved)")


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
