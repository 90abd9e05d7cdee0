"""Gemma 3's forward pass written as one plain function over the loaded model's weights, with a static KV cache.

Why by hand: transformers' forward runs ~7,050 ATen ops a token, and its static cache cannot be compiled for Gemma 3
(a Python int in StaticSlidingWindowLayer: one recompile per token, issue 22). Here a layer is ~60 ops with no Python
branch on a value, so it compiles to one graph (compiled_step.py, exported_step.py). The model's Linear layers become
views of the fused matrices (no copy); matmuls keep cpu_speed's precision, everything else is float32. Sliding-window
layers keep a ring buffer of the window's size (the newest key at slot ``position % window``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medcot.model.lora_delta import FusedDelta, LoraDelta, fused_factors
from medcot.model.memory import large_blocks_mapped
from medcot.model.step_rows import ROWS, PackedRows


def unsupported(model: Any) -> str | None:
    """Why this model cannot decode through the static step (None: it can)."""
    if type(model).__name__ != "Gemma3ForCausalLM":
        return f"{type(model).__name__} is not a plain Gemma3ForCausalLM (an unmerged adapter?)"
    config = model.config
    if getattr(config, "attn_logit_softcapping", None) is not None:
        return "attention logit softcapping is not implemented"
    if getattr(config, "use_bidirectional_attention", False):
        return "bidirectional attention is not implemented"
    if config.hidden_activation != "gelu_pytorch_tanh":
        return f"activation {config.hidden_activation} is not implemented"
    if any(getattr(m, "bias", None) is not None for n, m in model.model.layers.named_modules() if n.endswith("_proj")):
        return "projection biases are not implemented"
    for parameters in config.rope_parameters.values():
        if parameters is not None and parameters.get("rope_type", "default") != "default":
            return f"RoPE type {parameters['rope_type']} is not implemented"
    return None


@dataclass
class _Layer:
    norm_in: torch.Tensor  # 1 + weight, float32, as Gemma3RMSNorm multiplies
    qkv: torch.Tensor | PackedRows  # (heads + 2 kv heads) * head_dim x hidden
    qk_norm: torch.Tensor  # (heads + kv heads) x head_dim: q_norm's rows then k_norm's
    o: torch.Tensor | PackedRows
    norm_post_attn: torch.Tensor
    norm_pre_ffn: torch.Tensor
    gate_up: torch.Tensor | PackedRows  # 2 * intermediate x hidden
    down: torch.Tensor | PackedRows
    norm_post_ffn: torch.Tensor
    kind: str  # "sliding_attention" or "full_attention"

    @property
    def sliding(self) -> bool:
        return self.kind == "sliding_attention"


class StaticDecoder:
    """The model's weights arranged for the step; ``prefill`` and ``step`` over a ``KVCache`` give the logits."""

    def __init__(self, model: Any, delta: LoraDelta | None = None, rows: str | None = None) -> None:
        """``delta``: a merged adapter's LoraDelta, subtracted in steps asked for the base model; ``rows``: decode
        through "q8", "bf16" or "int8" copies of the decoder matrices (step_rows.py)."""
        reason = unsupported(model)
        if reason:
            raise ValueError(reason)
        config = model.config
        self.model = model
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.head_dim
        self.eps = config.rms_norm_eps
        self.scale = config.query_pre_attn_scalar**-0.5
        self.window = config.sliding_window
        self.softcap = config.final_logit_softcapping
        self.embedding = model.model.embed_tokens
        self.final_norm = _norm_weight(model.model.norm)
        self.max_positions = config.max_position_embeddings
        kinds = list(config.layer_types)
        self.full_layer = kinds.index("full_attention") if "full_attention" in kinds else None
        self.rows = rows
        # Packing's float32 temporaries, mapped, go back to the OS when freed (q8 rows: RSS +350 MB otherwise, +112).
        with torch.no_grad(), large_blocks_mapped():
            self.layers = [
                self._arrange(layer, kind) for layer, kind in zip(model.model.layers, config.layer_types, strict=True)
            ]
            self.delta = delta
            self.deltas = fused_factors(delta, model) if delta is not None else None
            self.rope = {kind: self._rope_frequencies(model, kind) for kind in set(config.layer_types)}

    @property
    def device(self) -> torch.device:
        """Where the weights are, and so the cache and index tensors (read each time: ZeroGPU moves them)."""
        return self.embedding.weight.device

    def _arrange(self, layer: Any, kind: str) -> _Layer:
        attention, mlp = layer.self_attn, layer.mlp
        qkv = _fuse(attention.q_proj, attention.k_proj, attention.v_proj)
        gate_up = _fuse(mlp.gate_proj, mlp.up_proj)
        o, down = attention.o_proj.weight, mlp.down_proj.weight
        if self.rows is not None:
            qkv, o, gate_up, down = (ROWS[self.rows](weight) for weight in (qkv, o, gate_up, down))
        q_norm, k_norm = _norm_weight(attention.q_norm), _norm_weight(attention.k_norm)
        heads = torch.cat([q_norm.expand(self.heads, -1), k_norm.expand(self.kv_heads, -1)])
        return _Layer(
            _norm_weight(layer.input_layernorm),
            qkv,
            heads,
            o,
            _norm_weight(layer.post_attention_layernorm),
            _norm_weight(layer.pre_feedforward_layernorm),
            gate_up,
            down,
            _norm_weight(layer.post_feedforward_layernorm),
            kind,
        )

    def _rope_frequencies(self, model: Any, kind: str) -> tuple[torch.Tensor, float]:
        rotary = model.model.rotary_emb
        return getattr(rotary, f"{kind}_inv_freq").float().clone(), getattr(rotary, f"{kind}_attention_scaling")

    def new_cache(self, length: int) -> KVCache:
        """An empty cache for a generation of at most ``length`` tokens, prompt included."""
        length = min(length, self.max_positions)
        # The ring keeps the window's size whatever the length, so that a compiled step sees one shape for it.
        shapes = [self.window if layer.sliding else length for layer in self.layers]
        return KVCache(
            [torch.zeros(1, self.kv_heads, size, self.head_dim, device=self.device) for size in shapes],
            [torch.zeros(1, self.kv_heads, size, self.head_dim, device=self.device) for size in shapes],
            torch.full((self.window,), -1, dtype=torch.long, device=self.device),
            length,
        )

    def prefill(self, ids: torch.Tensor, cache: KVCache, base: bool = False) -> torch.Tensor:
        """Logits (1 x vocabulary) after the prompt ``ids`` (1-D), which fill the cache from position 0; ``base``:
        the merged adapter's update subtracted (the base model's logits)."""
        count = ids.shape[0]
        if count > cache.length:
            raise ValueError(f"a prompt of {count} tokens does not fit a cache of {cache.length}")
        positions = torch.arange(count, device=ids.device)
        causal = positions[None, :] <= positions[:, None]
        masks = {False: causal, True: causal & (positions[None, :] > positions[:, None] - self.window)}
        kept = positions[-self.window :]  # the ring's content after the prompt
        cache.ring_positions.index_copy_(0, kept % cache.ring_positions.shape[0], kept)
        hidden, rope = self._embed(ids), self._rotations(positions)
        for index, layer in enumerate(self.layers):
            delta = self._delta(index, base)
            q, k, v = self._attention_inputs(hidden, layer, rope[layer.kind], delta)
            slots, ks, vs = (kept % cache.keys[index].shape[2], k[:, :, -len(kept) :], v[:, :, -len(kept) :])
            if not layer.sliding:
                slots, ks, vs = positions, k, v
            cache.keys[index].index_copy_(2, slots, ks)
            cache.values[index].index_copy_(2, slots, vs)
            out = F.scaled_dot_product_attention(q, k, v, masks[layer.sliding], scale=self.scale, enable_gqa=True)
            hidden = self._after_attention(hidden, out.transpose(1, 2).reshape(count, -1), layer, delta)
        return self.head(_rms(hidden[-1:], self.final_norm, self.eps))

    def step(self, token: torch.Tensor, position: torch.Tensor, cache: KVCache, base: bool = False) -> torch.Tensor:
        """Logits (1 x vocabulary) for one new token (shape (1,)) at ``position`` (shape (1,)), cached."""
        return self.head(self.step_hidden(token, position, cache.keys, cache.values, cache.ring_positions, base))

    def step_hidden(
        self,
        token: torch.Tensor,
        position: torch.Tensor,
        keys: list[torch.Tensor],
        values: list[torch.Tensor],
        ring_positions: torch.Tensor,
        base: bool = False,
    ) -> torch.Tensor:
        """A step's decoder layers up to the final norm: the part that is compiled (the heads' packed weights are
        opaque objects a graph cannot hold)."""
        ring_slot = position % ring_positions.shape[0]
        ring_positions.index_copy_(0, ring_slot, position)
        full = torch.arange(0 if self.full_layer is None else keys[self.full_layer].shape[2], device=position.device)
        masks = {True: (ring_positions >= 0)[None, :], False: (full <= position)[None, :]}
        hidden, rope = self._embed(token), self._rotations(position)
        for index, layer in enumerate(self.layers):
            delta = self._delta(index, base)
            q, k, v = self._attention_inputs(hidden, layer, rope[layer.kind], delta)
            slot = ring_slot if layer.sliding else position
            keys[index].index_copy_(2, slot, k)
            values[index].index_copy_(2, slot, v)
            mask = masks[layer.sliding][:, : keys[index].shape[2]]
            # One token: the query heads sharing a KV head become rows of one query, so no KV head is repeated.
            grouped = q.reshape(1, self.kv_heads, -1, self.head_dim)
            out = F.scaled_dot_product_attention(grouped, keys[index], values[index], mask, scale=self.scale)
            hidden = self._after_attention(hidden, out.reshape(1, -1), layer, delta)
        return _rms(hidden, self.final_norm, self.eps)

    def base_wanted(self) -> bool:
        """Whether the model is switched to the base now: the adapter switch attached the delta's hooks."""
        return self.delta is not None and self.delta.attached

    def _delta(self, index: int, base: bool) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if not base:
            return {}
        if self.deltas is None:
            raise ValueError("the base model was asked for, but this decoder has no adapter delta")
        return self.deltas[index]

    def _rotations(self, positions: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """cos and sin at ``positions`` per layer kind, (tokens, 1, head_dim), as Gemma3RotaryEmbedding computes them
        (per step: 32k positions' tables take 134 MB); sin's first half negated: rotate_half(x) * sin = x.roll * it."""
        rotations = {}
        half = self.head_dim // 2
        for kind, (inv_freq, scaling) in self.rope.items():
            freqs = positions[:, None].float() * inv_freq[None, :]
            emb = torch.cat((freqs, freqs), dim=-1)
            cos, sin = emb.cos() * scaling, emb.sin() * scaling
            rotations[kind] = cos[:, None], torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)[:, None]
        return rotations

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        weight = self.embedding.weight
        return (F.embedding(ids, weight) * self.embedding.embed_scale.to(weight.dtype)).float()

    def _attention_inputs(
        self, hidden: torch.Tensor, layer: _Layer, rope: tuple[torch.Tensor, torch.Tensor], delta: FusedDelta
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normed, rotated queries and keys, and values, each (1, heads, tokens, head_dim)."""
        count = hidden.shape[0]
        qkv = _matmul(_rms(hidden, layer.norm_in, self.eps), layer.qkv, delta.get("qkv"))
        split = (self.heads + self.kv_heads) * self.head_dim
        qk = _rms(qkv[:, :split].reshape(count, -1, self.head_dim), layer.qk_norm, self.eps)
        cos, sin = rope
        qk = (qk * cos + qk.roll(self.head_dim // 2, dims=-1) * sin).transpose(0, 1)[None]
        v = qkv[:, split:].reshape(1, count, self.kv_heads, self.head_dim).transpose(1, 2)
        return qk[:, : self.heads], qk[:, self.heads :], v

    def _after_attention(
        self, hidden: torch.Tensor, attended: torch.Tensor, layer: _Layer, delta: FusedDelta
    ) -> torch.Tensor:
        hidden = hidden + _rms(_matmul(attended, layer.o, delta.get("o")), layer.norm_post_attn, self.eps)
        normed = _rms(hidden, layer.norm_pre_ffn, self.eps)
        gate, up = _matmul(normed, layer.gate_up, delta.get("gate_up")).chunk(2, dim=-1)
        down = _matmul(F.gelu(gate, approximate="tanh") * up, layer.down, delta.get("down"))
        return hidden + _rms(down, layer.norm_post_ffn, self.eps)

    def head(self, normed: torch.Tensor) -> torch.Tensor:
        """Logits from the final norm's output: the model's output projection, softcapped where configured."""
        logits = self.model.lm_head(normed)
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


@dataclass
class KVCache:
    """A generation's keys and values per layer (1, kv heads, slots, head_dim), float32, on the weights' device."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    ring_positions: torch.Tensor  # the position held in each sliding-window slot; -1: not written yet
    length: int  # positions the full-attention layers hold


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Gemma3RMSNorm's arithmetic in its order (x * rsqrt(mean(x^2) + eps) * (1 + w)), on float32."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _norm_weight(norm: nn.Module) -> torch.Tensor:
    return 1.0 + norm.weight.detach().float()


def _matmul(
    x: torch.Tensor, weight: torch.Tensor | PackedRows, delta: tuple[torch.Tensor, torch.Tensor] | None
) -> torch.Tensor:
    if not isinstance(weight, torch.Tensor):  # a copy packed for one-row products (step_rows.py)
        out = weight.product(x)
    elif x.shape[0] <= 1 or weight.dtype == x.dtype:
        out = F.linear(x.to(weight.dtype), weight).float()
    else:  # a prompt: upcast, as cpu_speed.HalfLinear does (the f16 matrix-matrix kernel is ~4x slower than f32's)
        out = F.linear(x, weight.to(x.dtype))
    if delta is not None:  # the base model from merged weights: the adapter's low-rank update taken off again
        out = out - F.linear(F.linear(x, delta[0]), delta[1])
    return out


def _fuse(*linears: nn.Module) -> torch.Tensor:
    """The layers' weights stacked into one matrix, each layer's weight made a view of its rows (no second copy)."""
    fused = torch.cat([linear.weight.detach() for linear in linears])
    start = 0
    for linear in linears:
        rows = linear.weight.shape[0]
        linear.weight = nn.Parameter(fused[start : start + rows], requires_grad=False)
        start += rows
    return fused
