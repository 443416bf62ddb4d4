"""A lean forward of the embedded Qwen3 policy for the CPU presets: decode, update, evaluation.

Why (issue 31, profiled with ``torch.profiler`` on one thread, the shipped ``noisy-chain`` warm
start, 32 prompts x 8 rollouts): transformers' forward spends about half of a decode step outside
its 28 weight matmuls.  Its sdpa path for a one-token query (``_scaled_dot_product_flash_attention
_for_cpu``, ~1 ms a call at batch 256, 22% of a generation) copies the cache's filled part to a
contiguous buffer per layer and step (``copy_``, 15%), and the rest is ~60 small ops per layer
(separate q/k/v and gate/up projections, norms in five ops, rotary in six, mask and position
bookkeeping).  In an update, flash attention's backward and the padding of every row to the
longest one cost as much as the MLP.

What this module computes is the same function as ``Qwen3ForCausalLM`` (a test pins logits,
log-probs and last hidden states to the transformers model's on every shipped warm start, within
float tolerance), read from the model's own parameters, so the policy stays a transformers model
for saving, loading, lm-eval, vLLM and the real-model presets, and an update through this forward
trains the model's parameters:

* fused projections: q, k, v in one matmul, gate and up in one, each built by ``torch.cat`` of
  the parameters (inside autograd in an update; once per generation otherwise, ~0.8M floats);
* the output and down projections add the residual in the same op (``addmm``);
* ``rms_norm`` as one op; q- and k-norm in one op over both (their weights, the attention's
  1/sqrt(head_dim) folded into q's, multiply after); rotary as ``x cos + roll(x) sin*`` with a
  table of cos and signed sin per position, over q and k at once;
* decoding: a cache preallocated for the whole generation, all layers in one tensor, so a step
  writes one slot and compaction is one indexed copy of the filled part; attention is two
  batched matmuls over the filled part with the query heads of a key/value head stacked (GQA
  without repeating the cache), and a -inf bias only when some row is left-padded;
* sequences (prefill, update): the same layers with explicit attention (two matmuls and a
  softmax; 10% of an update's profile);
* an update (:meth:`FastQwen3.response_logprobs`): each distinct prompt runs once and its keys
  and values serve its G rows, and responses run in length-sorted groups padded to their own
  longest, instead of every row padded to the longest prompt + response.

Measured (README, "The lean forward"): the engine 0.86x the seconds per token of transformers'
path, the decode step 2.34x its weight matmuls (transformers' 2.97x), an update 0.39-0.58x.
What bounds the step is attention: its batched matmuls are one 2 x 32 by 32 x L matrix per row
and kv head, 512 at batch 256, and cost per matrix, not per FLOP (42% of a step's profile).

Departures from transformers' arithmetic (not from its function): the fused and folded ops round
differently, so logits agree to ~1e-5, not bitwise; a sampled token can therefore differ where a
row's uniform falls within that distance of a CDF boundary, which is why results made before this
module do not reproduce bit for bit (README).  Padded query positions (never read) attend to
themselves as well, so no softmax row is empty.

Where it applies (:func:`supports`): a ``qwen3`` model on CPU in float32 with default rotary, no
attention bias, SiLU MLP and no sliding window -- the embedded presets.  Anything else (the
real-model presets on GPU, bf16) keeps the transformers path.
"""
from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

_FAST: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def supports(model) -> bool:
    """Whether :class:`FastQwen3` computes this model's function (else use transformers)."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) != "qwen3":
        return False
    rope = getattr(cfg, "rope_parameters", None) or {}
    first = next(model.parameters())
    return (first.device.type == "cpu" and first.dtype == torch.float32
            and rope.get("rope_type", "default") == "default"
            and not getattr(cfg, "attention_bias", False)
            and getattr(cfg, "hidden_act", "silu") == "silu"
            and not getattr(cfg, "attention_dropout", 0.0)
            and not getattr(cfg, "use_sliding_window", False)
            and getattr(model.model.rotary_emb, "attention_scaling", 1.0) == 1.0)


def left_pad(prompts: list, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists as one left-padded batch: (ids, mask of the real tokens)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p):] = 1
    return ids, mask


def for_model(model) -> "FastQwen3 | None":
    """The model's fast forward (made once per model), or None where it does not apply."""
    if not supports(model):
        return None
    fast = _FAST.get(model)
    if fast is None:
        fast = _FAST[model] = FastQwen3(model)
    return fast


class FastQwen3:
    """The lean forward over one ``Qwen3ForCausalLM``'s parameters (read at each call)."""

    def __init__(self, model) -> None:
        if not supports(model):
            raise ValueError("FastQwen3 needs a float32 qwen3 model on CPU with default rotary")
        cfg = model.config
        self.model = model
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        self.layers = cfg.num_hidden_layers
        d = self.head_dim
        inv_freq = model.model.rotary_emb.inv_freq.float()
        # positions up to the model's limit; longer sequences extend the table on demand
        self._inv_freq = inv_freq
        self._tables(max(cfg.max_position_embeddings, 1))
        self.q_scale = d ** -0.5

    def _tables(self, size: int) -> None:
        freqs = torch.arange(size, dtype=torch.float32)[:, None] * self._inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        half = self.head_dim // 2
        self.cos = emb.cos()
        sin = emb.sin()
        # roll(x, half) = (x2, x1); rotate_half(x) = (-x2, x1): the sign goes into the table
        self.sin_signed = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)

    def _rope_at(self, positions: torch.Tensor):
        top = int(positions.max()) + 1 if positions.numel() else 0
        if top > self.cos.shape[0]:
            self._tables(2 * top)
        return self.cos[positions], self.sin_signed[positions]

    # ------------------------------------------------------------------ weights ---------
    def weights(self) -> list:
        """Per layer: (input norm, fused qkv, q/k-norm weights (scale folded), o, post norm,
        fused gate-up, down); then the final norm, embedding and head.  Built from the model's
        parameters with autograd when it is enabled, so gradients reach them."""
        m = self.model.model
        out = []
        for layer in m.layers:
            a, f = layer.self_attn, layer.mlp
            qkv = torch.cat((a.q_proj.weight, a.k_proj.weight, a.v_proj.weight))
            qk_norm = torch.cat((a.q_norm.weight.unsqueeze(0).expand(self.heads, -1) * self.q_scale,
                                 a.k_norm.weight.unsqueeze(0).expand(self.kv_heads, -1)))
            gate_up = torch.cat((f.gate_proj.weight, f.up_proj.weight))
            out.append((layer.input_layernorm.weight, qkv, qk_norm, a.o_proj.weight,
                        layer.post_attention_layernorm.weight, gate_up, f.down_proj.weight))
        return [out, m.norm.weight, m.embed_tokens.weight, self.model.lm_head.weight]

    # ------------------------------------------------------------------ pieces ----------
    def _qkv(self, x, w, cos, sin):
        """Normalised, rotated q and k, and v, from the layer input ``x`` (..., hidden)."""
        h, kv, d = self.heads, self.kv_heads, self.head_dim
        qkv = F.linear(x, w[1])
        qk = qkv[..., :(h + kv) * d].unflatten(-1, (h + kv, d))
        qk = F.rms_norm(qk, (d,), eps=self.eps) * w[2]
        qk = torch.addcmul(qk * cos, qk.roll(d // 2, -1), sin)
        return qk[..., :h, :], qk[..., h:, :], qkv[..., (h + kv) * d:].unflatten(-1, (kv, d))

    def _mlp(self, h, w):
        x = F.rms_norm(h, h.shape[-1:], w[4], self.eps)
        gate, up = F.linear(x, w[5]).chunk(2, dim=-1)
        return _residual(h, F.silu(gate) * up, w[6])

    # ------------------------------------------------------------------ sequences -------
    def forward(self, ids: torch.Tensor, positions: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None, weights=None, keep=None):
        """Logits (B, T, vocab) of ``ids`` (B, T), causal; ``positions`` (B, T) default
        ``0..T-1``; ``key_mask`` (B, T) marks real tokens (left padding in a prefill; right
        padding needs none, since a real query never sees a later key).  With ``keep`` (a
        callable taking the per-layer K and V (B, kv_heads, T, head_dim)) the cache is handed
        out.  Returns (logits, last hidden state after the final norm)."""
        b, t = ids.shape
        w = weights or self.weights()
        layers, norm, embed, head = w
        if positions is None:
            positions = torch.arange(t, device=ids.device).expand(b, t)
        cos, sin = self._rope_at(positions)
        cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)                # (B, T, 1, D)
        causal = torch.ones((t, t), dtype=torch.bool, device=ids.device).tril()
        if key_mask is not None:
            allowed = causal & key_mask.bool()[:, None, :]
            allowed |= torch.eye(t, dtype=torch.bool, device=ids.device)   # no empty row
            bias = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill_(~allowed,
                                                                                 float("-inf"))
            bias = bias[:, None, None]                                  # (B, 1, 1, T, T)
        else:
            bias = torch.zeros((t, t), dtype=torch.float32).masked_fill_(~causal, float("-inf"))
        h = F.embedding(ids, embed)
        for i, lw in enumerate(layers):
            h, k, v = self._layer(h, lw, cos, sin, bias)
            if keep is not None:
                keep(i, k, v)
        h = F.rms_norm(h, h.shape[-1:], norm, self.eps)
        return F.linear(h, head), h

    def _layer(self, h, lw, cos, sin, bias, prefix=None):
        """One decoder layer over sequences ``h`` (B, T, hidden); ``prefix`` (keys, values),
        each (B, kv_heads, P, head_dim), are earlier positions every query sees (``bias``
        covers them first).  Returns (h, this layer's K, V of the T positions)."""
        b, t = h.shape[:2]
        x = F.rms_norm(h, h.shape[-1:], lw[0], self.eps)
        q, k, v = self._qkv(x, lw, cos, sin)          # (B, T, heads, D)
        k, v = k.transpose(1, 2), v.transpose(1, 2)   # (B, kv, T, D)
        keys, values = (k, v) if prefix is None else \
            (torch.cat((prefix[0], k), dim=2), torch.cat((prefix[1], v), dim=2))
        # query heads of one kv head stacked: (B, kv, g, T, D)
        q = q.unflatten(2, (self.kv_heads, self.heads // self.kv_heads)).permute(0, 2, 3, 1, 4)
        scores = torch.matmul(q, keys.unsqueeze(2).transpose(-1, -2)) + bias
        attn = torch.matmul(torch.softmax(scores, dim=-1), values.unsqueeze(2))
        attn = attn.permute(0, 3, 1, 2, 4).reshape(b, t, -1)
        h = _residual(h, attn, lw[3])
        return self._mlp(h, lw), k, v

    # ------------------------------------------------------------------ an update -------
    def response_logprobs(self, prompts: list, responses: list, temperature: float,
                          group_rows: int = 32) -> torch.Tensor:
        """Log-probs of every response token given its prompt, flat in row order (row 0's
        tokens, then row 1's, ...), differentiable in the model's parameters.

        Each distinct prompt is run once and its keys and values serve all its rows (rows of a
        group share their prompt: without this the update runs each prompt G times), and the
        responses run in groups of ``group_rows`` rows of similar length, each padded only to
        its own longest (rather than every row to the batch's longest prompt + response).  The
        same function as one padded forward per row; only the summation order differs."""
        weights = self.weights()
        layers, norm, embed, head = weights
        distinct = list(dict.fromkeys(prompts))
        index_of = {p: i for i, p in enumerate(distinct)}
        ids, key_mask = left_pad(distinct, 0)
        key_mask = key_mask.bool()
        kept: list = []
        prompt_logits, _ = self.forward(ids, (key_mask.cumsum(-1) - 1).clamp(min=0), key_mask,
                                        weights, lambda i, k, v: kept.append((k, v)))
        prompt_logits = prompt_logits[:, -1]                           # predicts token 0
        lengths = [len(r) for r in responses]
        order = sorted(range(len(responses)), key=lambda i: lengths[i])
        pieces = {}
        for start in range(0, len(order), group_rows):
            group = [i for i in order[start:start + group_rows] if lengths[i] > 0]
            if not group:
                continue
            pidx = torch.tensor([index_of[prompts[i]] for i in group])
            longest = max(lengths[i] for i in group)
            targets = torch.zeros((len(group), longest), dtype=torch.long)
            for j, i in enumerate(group):
                targets[j, :lengths[i]] = torch.as_tensor(responses[i], dtype=torch.long)
            logits = prompt_logits[pidx].unsqueeze(1)
            if longest > 1:                                # tokens 1.. from positions 0..
                logits = torch.cat((logits, self._continue(
                    targets[:, :-1], pidx, key_mask, kept, weights)), dim=1)
            logp = torch.log_softmax(logits.float() / temperature, dim=-1)
            logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            for j, i in enumerate(group):
                pieces[i] = logp[j, :lengths[i]]
        return torch.cat([pieces[i] for i in range(len(responses)) if lengths[i] > 0])

    def _continue(self, ids, pidx, prompt_mask, kept, weights):
        """Logits of response positions ``ids`` (G, T) after their prompts ``pidx``, whose
        per-layer keys and values are ``kept`` (left-padded, ``prompt_mask``)."""
        layers, norm, embed, head = weights
        g_rows, t = ids.shape
        pmask = prompt_mask[pidx]                                      # (G, P)
        start = pmask.sum(-1, keepdim=True)                            # first response position
        positions = start + torch.arange(t)
        cos, sin = self._rope_at(positions)
        cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
        allowed = torch.cat((pmask[:, None, :].expand(g_rows, t, -1),
                             torch.ones((t, t), dtype=torch.bool).tril().expand(g_rows, t, t)),
                            dim=-1)
        bias = torch.zeros(allowed.shape).masked_fill_(~allowed, float("-inf"))[:, None, None]
        h = F.embedding(ids, embed)
        for lw, (k, v) in zip(layers, kept):
            h, _, _ = self._layer(h, lw, cos, sin, bias, (k[pidx], v[pidx]))
        h = F.rms_norm(h, h.shape[-1:], norm, self.eps)
        return F.linear(h, head)

    # ------------------------------------------------------------------ decoding --------
    @torch.no_grad()
    def prefill(self, ids: torch.Tensor, key_mask: torch.Tensor, extra: int):
        """Prefill left-padded prompts; returns (last logits, last hidden, cache) with room
        for ``extra`` more positions."""
        positions = (key_mask.cumsum(-1) - 1).clamp(min=0)
        weights = self.weights()
        b, t = ids.shape
        cache = DecodeCache(self.layers, b, self.kv_heads, t + extra, self.head_dim,
                            key_mask.bool(), weights)

        def keep(i, k, v):
            cache.kv[i, 0, :, :, :t] = k
            cache.kv[i, 1, :, :, :t] = v
        logits, hidden = self.forward(ids, positions, key_mask, weights, keep)
        cache.length = t
        return logits[:, -1], hidden[:, -1], cache

    def decoder(self, ids, key_mask, expand, extra: int) -> "Decoder":
        """The engine's decoder: prefill the distinct prompts ``ids`` once, replicated to the
        rows ``expand`` (row -> prompt)."""
        return Decoder(self, ids, key_mask, expand, extra)

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, positions: torch.Tensor, cache: "DecodeCache"):
        """One decode step: ``tokens`` (B,) at ``positions`` (B,) after the cache's filled part.
        Returns (logits (B, vocab), last hidden (B, hidden))."""
        layers, norm, embed, head = cache.weights
        b, n, d, kv = tokens.shape[0], cache.length, self.head_dim, self.kv_heads
        g = self.heads // kv
        cos, sin = self._rope_at(positions)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)                   # (B, 1, D)
        bias = cache.bias(n + 1)
        h = F.embedding(tokens, embed)
        for i, lw in enumerate(layers):
            x = F.rms_norm(h, h.shape[-1:], lw[0], self.eps)
            q, k, v = self._qkv(x, lw, cos, sin)          # (B, heads, D), (B, kv, D)
            keys, values = cache.kv[i, 0], cache.kv[i, 1]  # (B, kv, T, D)
            keys[:, :, n] = k
            values[:, :, n] = v
            # per (row, kv head) one matrix: its g query heads against the filled part, read
            # in place (CPU flash attention is 1-8 ms a call here, this ~0.8 ms at batch 256)
            keys = keys[:, :, :n + 1].flatten(0, 1)
            values = values[:, :, :n + 1].flatten(0, 1)
            scores = torch.bmm(q.reshape(b * kv, g, d), keys.transpose(1, 2))
            if bias is not None:
                scores += bias
            attn = torch.bmm(torch.softmax(scores, dim=-1), values).view(b, -1)
            h = _residual(h, attn, lw[3])
            h = self._mlp(h, lw)
        cache.length = n + 1
        h = F.rms_norm(h, h.shape[-1:], norm, self.eps)
        return F.linear(h, head), h


def _residual(h, x, weight):
    """``h + x @ weight.T`` in one op (a projection that adds the residual)."""
    shape = h.shape
    return torch.addmm(h.reshape(-1, shape[-1]), x.reshape(-1, x.shape[-1]), weight.t()).view(shape)


class DecodeCache:
    """Keys and values of every layer in one buffer (layers, 2, B, kv_heads, T, head_dim), the
    weights of the generation (fixed while it runs), and which prompt positions are padding."""

    def __init__(self, layers, batch, kv_heads, size, head_dim, key_mask, weights) -> None:
        self.kv = self._base = torch.empty((layers, 2, batch, kv_heads, size, head_dim))
        self._spare = None
        self.length = 0
        self.weights = weights
        self.kv_heads = kv_heads
        self.prompt_mask = key_mask                    # (B, prompt width), True = real token
        self._bias()

    def _bias(self) -> None:
        # the additive mask over every key slot per row; None when no row is padded
        self.padded = bool((~self.prompt_mask).any())
        if not self.padded:
            self._full_bias = None
            return
        width = self.prompt_mask.shape[1]
        bias = torch.zeros((self.prompt_mask.shape[0], self.kv.shape[4]))
        bias[:, :width].masked_fill_(~self.prompt_mask, float("-inf"))
        self._full_bias = bias.repeat_interleave(self.kv_heads, dim=0).unsqueeze(1)

    def bias(self, length: int) -> torch.Tensor | None:
        """The additive mask over the first ``length`` keys, (B kv_heads, 1, length)."""
        return None if self._full_bias is None else self._full_bias[..., :length]

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the rows ``keep`` (compaction, and the prompts' replication): the filled
        part gathered into a second buffer kept for the purpose, the two swapped.  A fresh
        buffer per compaction costs ~7x the gather (page faults on ~100 MB at 512 rows)."""
        m = len(keep)
        if self._spare is None or self._spare.shape[2] < m:
            self._spare = self.kv.new_empty(self.kv.shape[:2] + (m,) + self.kv.shape[3:])
        into = self._spare[:, :, :m]
        torch.index_select(self.kv[..., :self.length, :], 2, keep,
                           out=into[..., :self.length, :])
        self._spare, self._base = self._base, self._spare
        self.kv = into
        self.prompt_mask = self.prompt_mask[keep]
        self._bias()


class Decoder:
    """What ``trainer.engine`` drives: ``logits`` of the next position of every row, ``step``
    (one token per row), ``select`` (compaction)."""

    @torch.no_grad()
    def __init__(self, fast: FastQwen3, ids, key_mask, expand, extra: int) -> None:
        self.fast = fast
        logits, _, self.cache = fast.prefill(ids, key_mask, extra)
        self.cache.select(expand)
        self.logits = logits[expand]
        self.positions = ((key_mask.cumsum(-1) - 1).clamp(min=0))[expand, -1]

    def select(self, keep: torch.Tensor) -> None:
        self.cache.select(keep)
        self.positions = self.positions[keep]

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, want_hidden: bool):
        self.positions = self.positions + 1
        logits, hidden = self.fast.step(tokens, self.positions, self.cache)
        return logits, hidden if want_hidden else None
