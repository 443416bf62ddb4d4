"""Write AllocBench's MATH tasks as verl parquet files (run in the MAIN environment).

    python integrations/verl/examples/prepare_math.py --train data/math_train.jsonl \
        --val data/math500.jsonl --out data/verl

The prompts are the ones the ``qwen3-1.7b-math`` preset trains on (``trainer.data.load_tasks``:
the problem, then DUET's "Please reason step by step ..." suffix, plain text for a base model),
in file order.  Each row gets ``extra_info.index`` = its position in the file: the plugin keys
every method's per-prompt state by it.  ``reward_model.ground_truth`` is the gold answer that
``math_verify_reward.py`` scores with math-verify, as the preset's verifier does.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from trainer.data import load_tasks

DATA_SOURCE = "allocbench/math"


def to_frame(path: str, limit: int | None = None) -> pd.DataFrame:
    tasks = load_tasks(path, limit=limit)
    return pd.DataFrame({
        "data_source": [DATA_SOURCE] * len(tasks),
        "prompt": [[{"role": "user", "content": t.prompt}] for t in tasks],
        "reward_model": [{"style": "rule", "ground_truth": t.gold["answer"]} for t in tasks],
        "extra_info": [{"index": i, "bucket": t.bucket} for i, t in enumerate(tasks)],
    })


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True, help="MATH-schema JSONL of training problems")
    parser.add_argument("--val", required=True, help="MATH-schema JSONL of held-out problems")
    parser.add_argument("--out", required=True, help="directory for train.parquet and val.parquet")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        frames = {"train": to_frame(args.train), "val": to_frame(args.val)}
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, frame in frames.items():
        frame.to_parquet(out / f"{name}.parquet")
    print(f"wrote {len(frames['train'])} training and {len(frames['val'])} held-out prompts "
          f"to {out}/ (pool_size={len(frames['train'])})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
