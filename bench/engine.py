"""``python -m bench.engine``: the hf rollout engine against ``model.generate`` on the same prompts.

Both sample ``--samples`` rollouts of each of ``--prompts`` training prompts from the preset's
policy at its temperature, up to its maximum response length.  Throughput counts useful tokens:
each row's tokens up to and including its first EOS (what the trainer keeps).  ``model.generate``
keeps finished rows in the batch until the longest row ends, so its time follows batch size x
longest row; the engine drops finished rows, so its time follows the tokens actually generated.
Figures are medians over ``--repeats`` after one warm-up, measured in one process, so the ratio is
meaningful on a shared, noisy machine even when the absolute numbers are not.

A third row runs the engine on the same rows with DUET's per-token stop controller
(:mod:`lengthctl.duet`, the preset's defaults) attached to every row: its useful tokens/s against
the bare engine's is the controller's cost per generated token, which is what decides whether the
tokens DUET's stop rule saves turn into saved seconds.  Rows it aborts or stops end early, so it
may generate fewer tokens than the bare engine; tokens/s stays comparable.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import lengthctl
from bench.presets import PRESETS, get_preset
from trainer.engine import HFEngine, RowSpec
from trainer.policy import load_policy
from trainer.sft import initial_policy_dir
from trainer.tasks import build_splits


def useful_tokens(sequences: torch.Tensor, eos_id: int) -> int:
    """Tokens per row up to and including the first EOS (all of them if none)."""
    is_eos = sequences == eos_id
    first = torch.where(is_eos.any(-1), is_eos.int().argmax(-1) + 1,
                        torch.full((sequences.shape[0],), sequences.shape[1]))
    return int(first.sum())


def time_engine(engine: HFEngine, rows: list[RowSpec]) -> tuple[float, int]:
    start = time.perf_counter()
    gens = engine.generate(rows)
    return time.perf_counter() - start, sum(len(g.tokens) for g in gens)


@torch.no_grad()
def time_generate(model, tokenizer, prompts: list[str], samples: int, max_new: int,
                  temperature: float, top_p: float) -> tuple[float, int]:
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
    start = time.perf_counter()
    out = model.generate(**batch, do_sample=True, temperature=temperature, top_p=top_p, top_k=0,
                         max_new_tokens=max_new, num_return_sequences=samples,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    seconds = time.perf_counter() - start
    return seconds, useful_tokens(out[:, batch["input_ids"].shape[1]:], tokenizer.eos_token_id)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.engine",
        description="Tokens/s of the hf rollout engine versus transformers' model.generate on the "
                    "same prompts, with mixed output lengths.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--preset", default="tiny", help=f"policy and sampling settings: {', '.join(PRESETS)}")
    parser.add_argument("--prompts", type=int, default=32, help="distinct training prompts")
    parser.add_argument("--samples", type=int, default=8, help="rollouts per prompt")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (median reported)")
    parser.add_argument("--device", default=None, help="torch device (default: the preset's)")
    args = parser.parse_args(argv)
    try:
        preset = get_preset(args.preset)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    if args.prompts < 1 or args.samples < 1 or args.repeats < 1:
        print("error: --prompts, --samples and --repeats must be at least 1", file=sys.stderr)
        return 2
    torch.set_num_threads(preset.threads)
    model, tokenizer = load_policy(initial_policy_dir(preset, progress=True))
    model.to(args.device or preset.device).eval()
    train, _ = build_splits(preset.train_per_bucket, preset.eval_per_bucket)
    tasks = train[:args.prompts]
    engine = HFEngine(model, tokenizer, max_new_tokens=preset.max_new_tokens,
                      temperature=preset.temperature, top_p=preset.top_p)
    rows = [RowSpec(tuple(tokenizer(t.prompt)["input_ids"]), seed=1000 * i + k)
            for i, t in enumerate(tasks) for k in range(args.samples)]
    stop_rule = lengthctl.get("duet")(preset.max_new_tokens, seed=0)

    def controlled_rows():
        """The same rows, each with a fresh DUET stop controller (they hold per-row state)."""
        return [RowSpec(r.prompt_ids, r.seed, stop_rule.row_controller(0, None, r.seed))
                for r in rows]
    prompts = [t.prompt for t in tasks]

    def run_generate():
        return time_generate(model, tokenizer, prompts, args.samples, preset.max_new_tokens,
                             preset.temperature, preset.top_p)

    time_engine(engine, rows[:8])
    run_generate()
    # interleaved, so a burst of load on a shared machine hits all three alike
    engine_runs, controlled_runs, generate_runs = [], [], []
    for _ in range(args.repeats):
        engine_runs.append(time_engine(engine, rows))
        controlled_runs.append(time_engine(engine, controlled_rows()))
        generate_runs.append(run_generate())
    engine_rate = statistics.median(tok / sec for sec, tok in engine_runs)
    controlled_rate = statistics.median(tok / sec for sec, tok in controlled_runs)
    generate_rate = statistics.median(tok / sec for sec, tok in generate_runs)
    lengths = [len(g.tokens) for g in engine.generate(rows)]
    print(f"preset {preset.name}: {len(rows)} rollouts ({args.prompts} prompts x {args.samples}), "
          f"max {preset.max_new_tokens} new tokens, lengths {min(lengths)}-{max(lengths)} "
          f"(mean {statistics.mean(lengths):.1f}), device {model.device}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'engine':18s} {'useful tokens/s':>16s}")
    print(f"{'hf engine':18s} {engine_rate:16,.0f}")
    print(f"{'  + DUET stop rule':18s} {controlled_rate:16,.0f}   "
          f"({controlled_runs[0][1]:,} tokens generated vs {engine_runs[0][1]:,} without it)")
    print(f"{'model.generate':18s} {generate_rate:16,.0f}")
    print(f"ratio (engine / generate): {engine_rate / generate_rate:.2f}x; "
          f"DUET controller cost per token: {engine_rate / controlled_rate - 1:+.1%} "
          f"(median of {args.repeats} repeats each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
