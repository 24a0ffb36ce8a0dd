"""The backbone transformer shared by both paradigms (section 4.2, appendix E.3.1).

MusicGen-style pre-norm decoder blocks: sinusoidal positions added to the input, then per block

    x <- x + SelfAttn(LN(x))            (causal for AR, full for FM)
    x <- x + CrossAttn(LN(x), text)     (text features with a key padding mask)
    x <- x + FFN(LN(x))

The FM variant adds U-Net-like skips (appendix E.3.1): with ``2N`` blocks, the input of block ``i``
(``i <= N``) is merged with the output of block ``2N - i`` by ``Linear(Concat(x, skip))`` before it
enters block ``2N - i + 1``. For AR decoding, :class:`KVCache` keeps each layer's self-attention keys
and values, and the cross-attention keys and values are computed once from the text.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sinusoidal_embedding(positions: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """``[...] -> [..., dim]`` float32: ``[cos(p w_i), sin(p w_i)]`` with ``w_i = max_period^(-i / (dim/2))``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    args = positions.to(torch.float32)[..., None] * freqs
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class LayerCache:
    """Keys/values of one layer: self-attention grows step by step, cross-attention is computed once."""

    def __init__(self, capacity: int = 0) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.cross: tuple[Tensor, Tensor] | None = None
        self.capacity = capacity  # steps allocated at the first write (grown by doubling past it)

    def append(self, k: Tensor, v: Tensor, start: int) -> tuple[Tensor, Tensor]:
        """Write ``k, v`` ``[B, H, n, hd]`` at ``start`` and return the keys/values of steps ``< start + n``."""
        end = start + k.shape[2]
        if self.k is None or self.k.shape[2] < end:
            cap = max(end, 2 * (self.k.shape[2] if self.k is not None else 0), self.capacity, 64)
            new_k = k.new_empty(k.shape[0], k.shape[1], cap, k.shape[3])
            new_v = v.new_empty(new_k.shape)
            if self.k is not None:
                new_k[:, :, :start] = self.k[:, :, :start]
                new_v[:, :, :start] = self.v[:, :, :start]
            self.k, self.v = new_k, new_v
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]

    def attend(self, q: Tensor, k: Tensor, v: Tensor, start: int, causal: bool, dropout_p: float) -> Tensor:
        """Store the new steps' keys/values and attend from their queries to every step seen so far."""
        k, v = self.append(k, v, start)
        n = q.shape[2]
        mask = None
        if causal and n > 1:  # new queries see the cache and the earlier new steps
            mask = torch.ones(n, start + n, dtype=torch.bool, device=q.device).tril(diagonal=start)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


class StaticLayerCache(LayerCache):
    """A cache of fixed shape ``[B, H, capacity, hd]`` whose position is a tensor.

    Every step reads and writes the same buffers and the attention covers the whole buffer with a mask of
    the steps not yet written, so a step has the same shapes and no Python integer that changes: what
    ``torch.compile`` needs to trace one graph for the whole decode, and what a CUDA graph replays.
    """

    def attend(self, q: Tensor, k: Tensor, v: Tensor, start: Tensor, causal: bool, dropout_p: float) -> Tensor:
        if self.k is None:
            self.k = k.new_zeros(k.shape[0], k.shape[1], self.capacity, k.shape[3])
            self.v = torch.zeros_like(self.k)
        n = q.shape[2]
        steps = start + torch.arange(n, device=q.device)
        self.k.index_copy_(2, steps, k)
        self.v.index_copy_(2, steps, v)
        keys = torch.arange(self.capacity, device=q.device)
        mask = keys[None, :] <= steps[:, None] if causal else (keys < start + n)[None, :]
        return F.scaled_dot_product_attention(q, self.k, self.v, attn_mask=mask, dropout_p=dropout_p)


class KVCache:
    """Per-layer caches plus the number of steps already seen (the position offset).

    ``capacity``: steps to allocate up front (the whole decode, so the buffers never grow). ``static``: fixed
    shapes and a tensor position (:class:`StaticLayerCache`), for a compiled or graph-captured step.
    """

    def __init__(self, n_layers: int, capacity: int = 0, static: bool = False) -> None:
        if static and capacity < 1:
            raise ValueError("a static KV cache needs its capacity (the number of decoding steps)")
        layer = StaticLayerCache if static else LayerCache
        self.layers = [layer(capacity) for _ in range(n_layers)]
        self.static = static
        self.capacity = capacity
        self._pos = torch.zeros((), dtype=torch.long) if static else 0

    @property
    def length(self) -> int:
        """Steps written so far (a host sync for a static cache)."""
        return int(self._pos)

    @property
    def start(self) -> int | Tensor:
        """Position of the next step: an int, or a 0-d long tensor for a static cache."""
        return self._pos

    def to(self, device) -> "KVCache":
        if self.static:
            self._pos = self._pos.to(device)
        return self

    def advance(self, n: int) -> None:
        if self.static:
            self._pos.add_(n)  # in place: a compiled step or a CUDA graph keeps the same tensor
        else:
            self._pos += n

    def reset(self, position: int) -> None:
        if self.static:
            self._pos.fill_(position)
        else:
            self._pos = position


def _heads(x: Tensor, heads: int) -> Tensor:
    b, s, d = x.shape
    return x.view(b, s, heads, d // heads).transpose(1, 2)


def _merge(x: Tensor) -> Tensor:
    b, h, s, hd = x.shape
    return x.transpose(1, 2).reshape(b, s, h * hd)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, causal: bool, cache: LayerCache | None = None, start: int = 0) -> Tensor:
        q, k, v = (_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))
        p = self.dropout if self.training else 0.0
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal)
        else:
            y = cache.attend(q, k, v, start, causal, p)
        return self.out(_merge(y))


class CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor, memory: Tensor, attn_mask: Tensor | None, cache: LayerCache | None = None) -> Tensor:
        """``attn_mask``: bool ``[B, 1, 1, L]`` (True: attend), see :func:`memory_attn_mask`."""
        q = _heads(self.q(x), self.heads)
        if cache is not None and cache.cross is not None:
            k, v = cache.cross
        else:
            k, v = (_heads(t, self.heads) for t in self.kv(memory).chunk(2, dim=-1))
            if cache is not None:
                cache.cross = (k, v)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        return self.out(_merge(y))


def memory_attn_mask(memory_mask: Tensor | None) -> Tensor | None:
    """Text key padding mask ``[B, L]`` -> the ``[B, 1, 1, L]`` bool mask cross-attention takes."""
    return None if memory_mask is None else memory_mask[:, None, None, :].bool()


class Block(nn.Module):
    """One pre-norm decoder block: self-attention, optional cross-attention, feed-forward."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float = 0.0, cross_attention: bool = True) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = SelfAttention(dim, heads, dropout)
        self.norm_cross = nn.LayerNorm(dim) if cross_attention else None
        self.cross_attn = CrossAttention(dim, heads, dropout) if cross_attention else None
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, memory: Tensor | None, attn_mask: Tensor | None, causal: bool,
                cache: LayerCache | None = None, start: int | Tensor = 0) -> Tensor:
        """``attn_mask``: the prepared text mask of :func:`memory_attn_mask`."""
        if self.training:
            x = x + self.drop(self.self_attn(self.norm_self(x), causal, cache, start))
            if self.cross_attn is not None and memory is not None:
                x = x + self.drop(self.cross_attn(self.norm_cross(x), memory, attn_mask, cache))
            return x + self.drop(self.ffn(self.norm_ffn(x)))
        # inference: the same computation without the dropout modules (identities in eval mode) and their calls
        x = x + self.self_attn(self.norm_self(x), causal, cache, start)
        if self.cross_attn is not None and memory is not None:
            x = x + self.cross_attn(self.norm_cross(x), memory, attn_mask, cache)
        up, act, _, down = self.ffn
        return x + down(act(up(self.norm_ffn(x))))


class Transformer(nn.Module):
    """``[B, S, dim] -> [B, S, dim]`` backbone; ``causal`` for AR, full attention (and ``unet_skips``) for FM."""

    def __init__(self, dim: int, heads: int, layers: int, ffn: int, dropout: float = 0.0, causal: bool = True,
                 cross_attention: bool = True, unet_skips: bool = False) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.dim, self.causal = dim, causal
        self.blocks = nn.ModuleList(Block(dim, heads, ffn, dropout, cross_attention) for _ in range(layers))
        n_skips = layers // 2 if unet_skips else 0
        self.skips = nn.ModuleList(nn.Linear(2 * dim, dim) for _ in range(n_skips))
        self.norm = nn.LayerNorm(dim)
        self._table: Tensor | None = None  # sinusoidal positions, computed once (not part of the state)

    def new_cache(self, capacity: int = 0, static: bool = False) -> KVCache:
        """A KV cache; ``capacity``: the steps to allocate up front; ``static``: see :class:`KVCache`."""
        cache = KVCache(len(self.blocks), capacity, static)
        return cache.to(self.norm.weight.device)

    def positions(self, n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """``[n, dim]`` sinusoidal embeddings of positions ``0 .. n-1`` (a table grown on demand)."""
        t = self._table
        if t is None or t.shape[0] < n or t.dtype != dtype or t.device != device:
            size = max(n, 1024, 2 * t.shape[0] if t is not None else 0)
            t = sinusoidal_embedding(torch.arange(size, device=device), self.dim).to(dtype)
            self._table = t
        return t[:n]

    def forward(self, x: Tensor, memory: Tensor | None = None, memory_mask: Tensor | None = None,
                cache: KVCache | None = None) -> Tensor:
        n_new = x.shape[1]
        if cache is None:
            start = 0
            x = x + self.positions(n_new, x.dtype, x.device)
        else:
            start = cache.start  # an int, or a 0-d tensor for a static cache
            if cache.static:
                table = self.positions(cache.capacity, x.dtype, x.device)
                x = x + table[start + torch.arange(n_new, device=x.device)]
            else:
                x = x + self.positions(start + n_new, x.dtype, x.device)[start:]
        attn_mask = memory_attn_mask(memory_mask)
        n, half = len(self.blocks), len(self.skips)
        stack: list[Tensor] = []
        for i, block in enumerate(self.blocks):
            if i < half:
                stack.append(x)
            elif i >= n - half:  # merge with the input of block n - 1 - i (0-indexed)
                x = self.skips[i - (n - half)](torch.cat([x, stack.pop()], dim=-1))
            layer_cache = cache.layers[i] if cache is not None else None
            x = block(x, memory, attn_mask, self.causal, layer_cache, start)
        if cache is not None:
            cache.advance(n_new)
        return self.norm(x)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """GPT-style init: normal(0, std) for linear and embedding weights, zero biases, unit LayerNorm."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
