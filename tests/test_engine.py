"""The hf rollout engine: counts, batch-independence, controllers, log-probs, finish reasons."""
import numpy as np
import pytest
import torch

from lengthctl.base import RowController
from trainer.engine import HFEngine, RowSpec
from trainer.policy import Architecture, build_model, build_tokenizer


def _setup(max_new=24):
    tok = build_tokenizer()
    model = build_model(tok, Architecture(hidden=64, layers=2, heads=2, kv_heads=1,
                                          intermediate=128), seed=3).eval()
    prompts = [tuple(tok(p)["input_ids"]) for p in ["1 + 2 =\n", "35 + 94 + 16 =\n", "7 - 8 =\n"]]
    return tok, model, prompts, HFEngine(model, tok, max_new_tokens=max_new)


@pytest.mark.parametrize("fast", [True, False])
def test_rows_do_not_depend_on_batch_layout_or_compaction(smoke_policy, fast):
    model, tok = smoke_policy
    prompts = [tuple(tok(p)["input_ids"]) for p in ["1 + 2 =\n", "35 + 94 + 16 =\n", "7 - 8 =\n"]]
    counts = [1, 5, 3]
    rows = [RowSpec(prompts[i], seed=100 * i + k) for i, n in enumerate(counts) for k in range(n)]
    engine = HFEngine(model, tok, max_new_tokens=30, fast=fast)
    base = engine.generate(rows)
    assert len(base) == sum(counts)
    assert len({len(g.tokens) for g in base}) > 1, "want mixed output lengths"
    no_compaction = engine.generate(rows, compact=False)
    small_batches = HFEngine(model, tok, max_new_tokens=30, max_batch_rows=2,
                             fast=fast).generate(rows[::-1])[::-1]
    alone = [engine.generate([r])[0] for r in rows]
    for other in (no_compaction, small_batches, alone):
        for a, b in zip(base, other):
            assert np.array_equal(a.tokens, b.tokens)
            assert a.finish == b.finish
            np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)


def test_logprobs_equal_a_recomputation_by_the_model():
    tok, model, prompts, engine = _setup()
    gens = engine.generate([RowSpec(prompts[1], seed=s) for s in range(4)])
    for g in gens:
        ids = torch.tensor([list(prompts[1]) + g.tokens.tolist()])
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompts[1]) - 1:-1]
        lp = torch.log_softmax(logits, -1).gather(-1, torch.from_numpy(g.tokens).unsqueeze(-1))
        np.testing.assert_allclose(lp.squeeze(-1).numpy(), g.logprobs, atol=1e-4)


def test_finish_reasons_eos_and_max_len(smoke_policy):
    model, tok = smoke_policy
    prompt = tuple(tok("12 + 7 =\n")["input_ids"])
    long = HFEngine(model, tok, max_new_tokens=40).generate([RowSpec(prompt, s) for s in range(6)])
    # which rows end by EOS depends on the policy's weights; what each finish means does not
    assert "eos" in {g.finish for g in long}
    for g in long:
        if g.finish == "eos":
            assert g.tokens[-1] == tok.eos_token_id and len(g.tokens) <= 40
            assert tok.eos_token_id not in g.tokens[:-1].tolist()
        else:
            assert g.finish == "max_len" and len(g.tokens) == 40
            assert tok.eos_token_id not in g.tokens.tolist()
    short = HFEngine(model, tok, max_new_tokens=3).generate([RowSpec(prompt, s) for s in range(6)])
    assert {g.finish for g in short} == {"max_len"}
    assert all(len(g.tokens) == 3 for g in short)


class StopAt(RowController):
    def __init__(self, at, reason):
        self.at, self.reason, self.calls = at, reason, 0

    def decide(self, t, margin, tail):
        self.calls += 1
        return self.reason if t == self.at else None

    @property
    def flags(self):
        return {"stop_at": self.at}


def test_a_controller_stops_exactly_the_rows_it_names():
    tok, model, prompts, engine = _setup(max_new=20)
    plain = engine.generate([RowSpec(prompts[0], s) for s in range(6)])
    rows = []
    for s in range(6):
        ctl = {1: StopAt(4, "stopped"), 3: StopAt(2, "aborted")}.get(s)
        rows.append(RowSpec(prompts[0], s, ctl))
    out = engine.generate(rows)
    for s, (a, b) in enumerate(zip(plain, out)):
        if s == 1:
            assert b.finish == "stopped" and len(b.tokens) == 5 and b.flags == {"stop_at": 4}
            assert np.array_equal(b.tokens[:4], a.tokens[:4]) and b.tokens[-1] == tok.eos_token_id
        elif s == 3:
            assert b.finish == "aborted" and len(b.tokens) == 3
        else:
            assert np.array_equal(a.tokens, b.tokens) and a.finish == b.finish


def test_forced_eos_logprob_is_the_policys_own():
    tok, model, prompts, engine = _setup(max_new=10)
    g = engine.generate([RowSpec(prompts[0], 0, StopAt(3, "stopped"))])[0]
    ids = torch.tensor([list(prompts[0]) + g.tokens[:-1].tolist()])
    with torch.no_grad():
        lp = torch.log_softmax(model(ids).logits[0, -1], -1)[tok.eos_token_id]
    assert abs(float(lp) - float(g.logprobs[-1])) < 1e-4


def test_top_p_and_greedy_paths():
    tok, model, prompts, _ = _setup()
    greedy = HFEngine(model, tok, max_new_tokens=12, temperature=0.0)
    a = greedy.generate([RowSpec(prompts[0], 1), RowSpec(prompts[0], 2)])
    assert np.array_equal(a[0].tokens, a[1].tokens), "greedy ignores the seed"
    # a nucleus this small keeps only the most likely token: sampling must equal greedy decoding
    narrow = HFEngine(model, tok, max_new_tokens=12, top_p=1e-6)
    for g in narrow.generate([RowSpec(prompts[0], s) for s in range(3)]):
        assert np.array_equal(g.tokens, a[0].tokens)
    # and a full-width nucleus is plain sampling: some seeds must leave the greedy path
    wide = HFEngine(model, tok, max_new_tokens=12, top_p=1.0)
    assert any(not np.array_equal(g.tokens, a[0].tokens)
               for g in wide.generate([RowSpec(prompts[0], s) for s in range(8)]))


def test_duet_batch_in_the_engine_equals_asking_each_row_every_position(smoke_policy):
    """The batched DUET rule (asked only at due positions, margins only where it needs them)
    gives the rows the per-row reference gives when asked at every position, in any layout."""
    import lengthctl
    from lengthctl.base import RowwiseBatch
    from lengthctl.duet import DuetRow

    class PerRow(DuetRow):
        __slots__ = ()

        def batch_key(self):
            return PerRow

        @classmethod
        def batch(cls, controllers, text):
            return RowwiseBatch(controllers, text)

    model, tok = smoke_policy
    prompts = [tuple(tok(p)["input_ids"]) for p in ["1 + 2 =\n", "35 + 94 + 16 =\n", "7 - 8 =\n"]]
    rule = lengthctl.get("duet")(40, seed=0, min_tokens=2)

    def rows(cls):
        out = []
        for i in range(24):
            row = rule.row_controller(0, {"tau": (0.3, 0.6, 0.9)[i % 3]}, 7 * i)
            row.__class__ = cls if cls is PerRow else row.__class__
            out.append(RowSpec(prompts[i % 3], seed=11 * i, controller=row))
        return out

    engine = HFEngine(model, tok, max_new_tokens=40)
    batched = engine.generate(rows(DuetRow))
    reference = engine.generate(rows(PerRow))
    uncompacted = engine.generate(rows(DuetRow), compact=False)
    split = HFEngine(model, tok, max_new_tokens=40, max_batch_rows=5).generate(rows(DuetRow))
    assert len({g.finish for g in batched}) >= 2
    for other in (reference, uncompacted, split):
        for a, b in zip(batched, other):
            assert np.array_equal(a.tokens, b.tokens) and a.finish == b.finish
            assert a.flags == b.flags


def test_token_text_joins_pieces_only_where_that_is_the_tokenizers_decode():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from trainer.engine import token_text

    tok = build_tokenizer()
    model = build_model(tok, Architecture(hidden=32, layers=1, heads=2, kv_heads=1,
                                          intermediate=64), seed=0)
    text = token_text(tok, model)
    assert text.decode.__name__ == "join"       # the character-level default takes the fast path
    rng = np.random.default_rng(0)
    for _ in range(300):                        # special ids (pad, EOS) included: both skip them
        ids = rng.integers(0, len(tok), size=int(rng.integers(0, 30))).tolist()
        assert text.decode(ids) == tok.decode(ids, skip_special_tokens=True)

    # byte-level BPE: a token's own text is not its share of the decoded string, so no join
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(["naïve café 3 + 4 = 7 \\boxed{7}"] * 20,
                             trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"]))
    bpe = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>")
    assert token_text(bpe, model).decode.__name__ != "join"


def test_rule_seconds_count_only_the_stop_rules_calls():
    tok, model, prompts, engine = _setup()

    class Never(RowController):
        def decide(self, t, margin, tail):
            return None

    engine.generate([RowSpec(p, seed=i) for i, p in enumerate(prompts)])
    assert engine.rule_seconds == 0.0               # no controller: the rule is never asked
    engine.generate([RowSpec(p, seed=i, controller=Never()) for i, p in enumerate(prompts)])
    assert engine.rule_seconds > 0.0


def test_eager_attention_keeps_the_2d_mask_and_generates_what_sdpa_does():
    # the engine hands sdpa a ready 4-d boolean mask, and every other attention the 2-d one;
    # eager would add a boolean mask as numbers, so a wrong branch changes the rollouts
    tok, model, prompts, _ = _setup(max_new=16)
    rows = [RowSpec(p, seed=10 * i + k) for i, p in enumerate(prompts) for k in range(3)]
    assert model.config._attn_implementation == "sdpa"
    # transformers' path (fast=False): the lean forward of trainer.fastlm has no mask branch
    sdpa = HFEngine(model, tok, max_new_tokens=16, fast=False).generate(rows)
    model.set_attn_implementation("eager")
    eager = HFEngine(model, tok, max_new_tokens=16, fast=False).generate(rows)
    for a, b in zip(sdpa, eager):
        assert np.array_equal(a.tokens, b.tokens)
        assert np.allclose(a.logprobs, b.logprobs, atol=1e-4)
