"""``python -m bench.engine``: the hf rollout engine against ``model.generate`` on the same prompts.

Both sample ``--samples`` rollouts of each of ``--prompts`` training prompts from the preset's
policy at its temperature, up to its maximum response length.  Throughput counts useful tokens:
each row's tokens up to and including its first EOS (what the trainer keeps).  ``model.generate``
keeps finished rows in the batch until the longest row ends, so its time follows batch size x
longest row; the engine drops finished rows, so its time follows the tokens actually generated.

Rows printed, all on the same rollouts (row seeds):

* ``hf engine``: the bare engine;
* ``+ DUET, decisions dropped``: DUET's stop controller (:mod:`lengthctl.duet`, the preset's
  defaults) asked on every row as usual, its decisions computed and then ignored, so the engine
  generates exactly the bare engine's tokens.  The controller's cost per token is the seconds
  the engine spends asking it (``HFEngine.rule_seconds``, margins included), timed inside each
  such run, over the run's other seconds: two separate runs' totals on a shared VM differ by
  more than the cost itself (their paired ratio is printed beside it).  Comparing tokens/s with
  the stops applied would also charge the rule for the batch shrinking sooner, which is the
  engine's cost, not the rule's;
* ``+ DUET stop rule``: the same controller with its stops applied, the rule as trained with;
* ``+ cut at F``: a synthetic stop rule that ends every row at ``F`` of its natural length (the
  bare engine's), so a known share of the tokens is cut; (seconds saved / seconds) over (tokens
  saved / tokens) says whether time follows tokens (1.0: every saved token saves its share);
* ``model.generate``: transformers' sampler, the baseline;
* ``forward only``: the model's one-token decode step at the full batch over a cache of the
  mean prompt-plus-half-response length, nothing else: an estimate of the hardware's limit at
  this batch (rows that finish only lower what a step can use);
* ``hf engine, transformers fwd`` and ``transformers forward only``: the same engine and step
  over transformers' forward (``HFEngine(fast=False)``), the path before :mod:`trainer.fastlm`;
* ``its weight matmuls only``: the step's fused weight matmuls at the same batch on inputs of
  their shapes, nothing else: the matmul floor the lean step is measured against.

Printed ratios, each the median of per-round paired ratios: the lean engine's seconds per token
over the transformers path's, and each decode step's seconds over the matmul floor's.

Seconds are process CPU seconds on a CPU device (they survive a shared machine; on 2 threads
they still count a spinning thread, so compare ratios from one run) and wall seconds on a GPU.
Figures are medians over ``--repeats`` after one warm-up, interleaved so that load hits all rows
alike; each ratio is the median of the repeats' paired ratios (rows of one round are timed
seconds apart, while the speed of a shared VM drifts by more than 10% between minutes).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

import lengthctl
from bench.presets import DEFAULT_PRESET, PRESETS, get_preset
from lengthctl.base import CONTINUE, STOPPED, RowBatch, RowController
from trainer.engine import HFEngine, RowSpec
from trainer.policy import load_policy
from trainer.sft import initial_policy_dir
from trainer.tasks import build_splits


class CutAt(RowController):
    """A synthetic rule: end the row (as ``stopped``) before sampling position ``at``."""

    def __init__(self, at: int) -> None:
        self.at = at

    def decide(self, t, margin, tail):
        return "stopped" if t == self.at else None

    @classmethod
    def batch(cls, controllers, text):
        return _CutBatch(controllers, text)


class Dropped(RowController):
    """Any rule's row, asked as usual, whose decisions the batch computes and then drops."""

    def __init__(self, inner: RowController) -> None:
        self.inner = inner

    def batch_key(self):
        return (Dropped, self.inner.batch_key())

    @classmethod
    def batch(cls, controllers, text):
        return _DroppedBatch([c.inner for c in controllers], text)


class _DroppedBatch(RowBatch):
    def __init__(self, inners, text):
        super().__init__(inners, text)
        self.inner = type(inners[0]).batch(inners, text)
        self.needs_hidden = self.inner.needs_hidden

    def next_position(self) -> int:
        return self.inner.next_position()

    def decide(self, rows, positions, history, margins, logprobs=None, **hidden):
        self.inner.decide(rows, positions, history, margins, logprobs=logprobs, **hidden)
        return np.zeros(len(rows), dtype=np.int8)


class _CutBatch(RowBatch):
    def __init__(self, controllers, text):
        super().__init__(controllers, text)
        self.at = np.array([c.at for c in controllers], dtype=np.int64)

    def next_position(self) -> int:
        return int(self.at.min())

    def decide(self, rows, positions, history, margins, logprobs=None):
        return np.where(positions >= self.at[rows], STOPPED, CONTINUE).astype(np.int8)


def useful_tokens(sequences: torch.Tensor, eos_id: int) -> int:
    """Tokens per row up to and including the first EOS (all of them if none)."""
    is_eos = sequences == eos_id
    first = torch.where(is_eos.any(-1), is_eos.int().argmax(-1) + 1,
                        torch.full((sequences.shape[0],), sequences.shape[1]))
    return int(first.sum())


class Clock:
    """Process CPU seconds on CPU, wall seconds (after a device sync) on GPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.name = "wall" if self.cuda else "CPU"

    def __call__(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time()


def time_engine(clock, engine: HFEngine, rows: list[RowSpec]) -> tuple[float, int, float]:
    """(seconds, useful tokens, seconds of them spent in the stop rules)."""
    asked = engine.rule_seconds
    start = clock()
    gens = engine.generate(rows)
    return clock() - start, sum(len(g.tokens) for g in gens), engine.rule_seconds - asked


@torch.no_grad()
def time_generate(clock, model, tokenizer, prompts: list[str], samples: int, max_new: int,
                  temperature: float, top_p: float) -> tuple[float, int]:
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
    start = clock()
    out = model.generate(**batch, do_sample=True, temperature=temperature, top_p=top_p, top_k=0,
                         max_new_tokens=max_new, num_return_sequences=samples,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    seconds = clock() - start
    return seconds, useful_tokens(out[:, batch["input_ids"].shape[1]:], tokenizer.eos_token_id), 0.0


@torch.no_grad()
def time_forward(clock, engine: HFEngine, rows: list[RowSpec], context: int,
                 steps: int = 8) -> tuple[float, int, float]:
    """``steps`` decode steps at the full batch after ``context`` cached positions, through
    the engine's forward (the lean one of :mod:`trainer.fastlm`, or transformers')."""
    n = len(rows)
    spec = RowSpec(tuple([engine.pad_id] * context), 0)
    saved = engine.max_new_tokens
    engine.max_new_tokens = steps                    # the decoder's cache room
    try:
        decoder = engine._decoder([spec] * n)
    finally:
        engine.max_new_tokens = saved
    token = torch.full((n,), engine.pad_id, dtype=torch.long, device=engine.device)
    start = clock()
    for _ in range(steps):
        decoder.step(token, False)
    return clock() - start, n * steps, 0.0


@torch.no_grad()
def time_floor(clock, fast, n: int, steps: int = 8) -> tuple[float, int, float]:
    """The weight matmuls of ``steps`` decode steps at batch ``n`` and nothing else: the fused
    projections :mod:`trainer.fastlm` runs (per layer q-k-v, output, gate-up, down; then the
    head), on inputs of the step's shapes."""
    layers, _, _, head = fast.weights()
    weights = [w for lw in layers for w in (lw[1], lw[3], lw[5], lw[6])] + [head]
    inputs = {w.shape[1]: torch.randn(n, w.shape[1]) for w in weights}
    start = clock()
    for _ in range(steps):
        for w in weights:
            torch.nn.functional.linear(inputs[w.shape[1]], w)
    return clock() - start, n * steps, 0.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.engine",
        description="Useful tokens/s of the hf rollout engine versus transformers' "
                    "model.generate on the same prompts with mixed output lengths, the DUET stop "
                    "controller's cost per token, whether time saved follows tokens saved, and "
                    "the forward pass alone at the same batch.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--preset", default=DEFAULT_PRESET,
                        help=f"policy and sampling settings: {', '.join(PRESETS)} (default {DEFAULT_PRESET})")
    parser.add_argument("--prompts", type=int, default=32, help="distinct training prompts")
    parser.add_argument("--samples", type=int, default=8, help="rollouts per prompt")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (median reported)")
    parser.add_argument("--cut", type=float, default=0.6,
                        help="the synthetic rule ends each row at this fraction of its natural "
                             "length (in (0, 1))")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: the preset's)")
    parser.add_argument("--device", default=None, help="torch device (default: the preset's)")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        preset = get_preset(args.preset)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    if args.prompts < 1 or args.samples < 1 or args.repeats < 1:
        print("error: --prompts, --samples and --repeats must be at least 1", file=sys.stderr)
        return 2
    if not 0.0 < args.cut < 1.0:
        print(f"error: --cut must lie in (0, 1), got {args.cut}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads or preset.threads)
    model, tokenizer = load_policy(initial_policy_dir(preset, progress=True))
    model.to(args.device or preset.device).eval()
    clock = Clock(model.device)
    train, _ = build_splits(preset.train_per_bucket, preset.eval_per_bucket, preset.task_mix,
                            preset.pool_weights)
    tasks = train[:args.prompts]
    engine = HFEngine(model, tokenizer, max_new_tokens=preset.max_new_tokens,
                      temperature=preset.temperature, top_p=preset.top_p)
    # the same engine over transformers' forward: the path before trainer.fastlm
    reference = HFEngine(model, tokenizer, max_new_tokens=preset.max_new_tokens,
                         temperature=preset.temperature, top_p=preset.top_p, fast=False)
    rows = [RowSpec(tuple(tokenizer(t.prompt)["input_ids"]), seed=1000 * i + k)
            for i, t in enumerate(tasks) for k in range(args.samples)]
    stop_rule = lengthctl.get("duet")(preset.max_new_tokens, seed=0)
    natural = [len(g.tokens) for g in engine.generate(rows)]
    # a row of natural length n keeps floor(F * n) sampled tokens plus the forced EOS
    cuts = [max(0, int(args.cut * n)) for n in natural]

    def controlled_rows():
        """The same rows, each with a fresh DUET stop controller (they hold per-row state)."""
        return [RowSpec(r.prompt_ids, r.seed, stop_rule.row_controller(0, None, r.seed))
                for r in rows]

    def dropped_rows():
        return [RowSpec(r.prompt_ids, r.seed, Dropped(r.controller)) for r in controlled_rows()]

    def cut_rows():
        return [RowSpec(r.prompt_ids, r.seed, CutAt(c) if c + 1 < n else None)
                for r, c, n in zip(rows, cuts, natural)]
    prompts = [t.prompt for t in tasks]

    def run_generate():
        return time_generate(clock, model, tokenizer, prompts, args.samples,
                             preset.max_new_tokens, preset.temperature, preset.top_p)

    context = int(statistics.mean(len(r.prompt_ids) for r in rows) + statistics.mean(natural) / 2)
    time_engine(clock, engine, rows[:8])
    time_engine(clock, reference, rows[:8])
    run_generate()
    # interleaved, so a burst of load on a shared machine hits every row alike
    runs: dict[str, list[tuple[float, int, float]]] = {k: [] for k in
                                                ("engine", "reference", "dropped", "duet", "cut",
                                                 "generate", "forward", "forward_hf", "floor")}
    for _ in range(args.repeats):
        runs["engine"].append(time_engine(clock, engine, rows))
        runs["reference"].append(time_engine(clock, reference, rows))
        runs["dropped"].append(time_engine(clock, engine, dropped_rows()))
        runs["duet"].append(time_engine(clock, engine, controlled_rows()))
        runs["cut"].append(time_engine(clock, engine, cut_rows()))
        runs["generate"].append(run_generate())
        runs["forward"].append(time_forward(clock, engine, rows, context))
        runs["forward_hf"].append(time_forward(clock, reference, rows, context))
        if engine.fast is not None:
            runs["floor"].append(time_floor(clock, engine.fast, len(rows)))
    if not runs["floor"]:
        del runs["floor"]
    rate = {k: statistics.median(tok / sec for sec, tok, _ in v) for k, v in runs.items()}
    seconds = {k: statistics.median(sec for sec, _, _ in v) for k, v in runs.items()}
    tokens = {k: v[0][1] for k, v in runs.items()}

    print(f"preset {preset.name}: {len(rows)} rollouts ({args.prompts} prompts x {args.samples}), "
          f"max {preset.max_new_tokens} new tokens, lengths {min(natural)}-{max(natural)} "
          f"(mean {statistics.mean(natural):.1f}), device {model.device}, "
          f"{torch.get_num_threads()} threads, {clock.name} seconds, median of {args.repeats}")
    print(f"{'':28s} {'useful tokens/s':>16s} {'tokens':>8s} {'seconds':>8s}")
    labels = {"engine": "hf engine" + (" (fastlm)" if engine.fast is not None else ""),
              "reference": "hf engine, transformers fwd",
              "dropped": "  + DUET, decisions dropped",
              "duet": "  + DUET stop rule", "cut": f"  + cut at {args.cut:g}",
              "generate": "model.generate", "forward": "forward only (limit)",
              "forward_hf": "  transformers forward only", "floor": "  its weight matmuls only"}
    for key, label in labels.items():
        if key not in runs:
            continue
        print(f"{label:28s} {rate[key]:16,.0f} {tokens[key]:8,d} {seconds[key]:8.3f}")
    token_share = 1 - tokens["cut"] / tokens["engine"]
    # ratios are paired by repeat (each run beside the others of its round): the VM's speed
    # drifts by more than 10% between minutes, which a ratio of two medians would absorb
    time_share = 1 - statistics.median(c[0] / e[0] for c, e in zip(runs["cut"], runs["engine"]))

    def paired_rate(a: str, b: str) -> float:
        """Median over repeats of a's tokens/s over b's, each pair timed a few seconds apart."""
        return statistics.median((ta / sa) / (tb / sb) for (sa, ta, _), (sb, tb, _)
                                 in zip(runs[a], runs[b]))
    print(f"engine / model.generate: {paired_rate('engine', 'generate'):.2f}x "
          f"(forward-only limit at batch {len(rows)}: {paired_rate('forward', 'generate'):.2f}x; "
          f"the engine runs at {paired_rate('engine', 'forward'):.0%} of it); ratios are "
          f"medians of the repeats' paired ratios")
    if "floor" in runs:
        print(f"lean forward (trainer.fastlm) / transformers': "
              f"{paired_rate('reference', 'engine'):.2f}x the engine's seconds per token; "
              f"decode step at batch {len(rows)} / its weight matmuls alone (the matmul floor): "
              f"fastlm {paired_rate('floor', 'forward'):.2f}x, transformers "
              f"{paired_rate('floor', 'forward_hf'):.2f}x")
    # the rule's seconds timed inside each run, over that run's other seconds
    share = statistics.median(rule / (sec - rule) for sec, _, rule in runs["dropped"])
    paired = statistics.median(d[0] / e[0] for d, e in zip(runs["dropped"], runs["engine"]))
    print(f"DUET controller cost per token: {share:+.1%} (its calls timed inside the engine, on "
          f"the bare engine's {tokens['dropped']:,} tokens; run-to-run, decisions dropped vs "
          f"bare: {paired - 1:+.1%}); with its stops {rate['engine'] / rate['duet'] - 1:+.1%} "
          f"per token, batch shrinking included ({tokens['duet']:,} tokens generated vs "
          f"{tokens['engine']:,} without it)")
    print(f"time saved per token saved: {time_share / token_share:.2f} "
          f"({time_share:.0%} of the seconds for {token_share:.0%} of the tokens cut)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
