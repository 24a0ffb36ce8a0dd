"""How one cached AR decoding step runs: eager, ``torch.compile``'d, or replayed as a CUDA graph.

A decode (:meth:`ARModel._decode`) first feeds the prefix (prefill), then one token per codebook per step.
Those single steps are what a decode spends its time on, and at small batch sizes their cost is mostly the
Python and the operator dispatch around a small forward. Three ways to run them, set per model with
:meth:`ARModel.set_decoding`:

``eager`` (default)
    the model's own modules on a KV cache allocated for the whole decode up front.
``compile``
    the step through ``torch.compile``: the cache is *static* (fixed-shape buffers, a tensor position and a
    mask over the steps not yet written, :class:`~.transformer.StaticLayerCache`) so that every step of every
    decode of the same shape runs one compiled graph.
``cuda_graphs`` (CUDA only)
    the static step captured once per decode into a ``torch.cuda.CUDAGraph`` and replayed at every step (its
    inputs copied into the captured buffers), which removes the launch cost of each kernel.

All three compute the same function of the same weights; compiled kernels may round differently in the last
bits, which the test suite checks does not change the decoded tokens on its models.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .ar import ARModel

MODES = ("eager", "compile", "cuda_graphs")


class FusedTables(NamedTuple):
    """The K embedding tables as one table (with each codebook's row offset) and the K heads as one matrix."""

    table: Tensor  # [K * rows, dim]
    offsets: Tensor  # [K, 1]
    heads: Tensor  # [K * codebook_size, dim]


def compiled_logits(model: "ARModel") -> Callable:
    """``torch.compile`` of the model's step function, made once per model and kept on it."""
    fn = model.__dict__.get("_compiled_logits")
    if fn is None:
        fn = torch.compile(model._logits, fullgraph=False)
        model.__dict__["_compiled_logits"] = fn
    return fn


class Stepper:
    """Runs the steps of one decode of ``steps`` steps in the model's decoding mode."""

    def __init__(self, model: "ARModel", steps: int, use_cache: bool) -> None:
        self.model = model
        self.mode = model.decoding if use_cache else "eager"
        if self.mode == "cuda_graphs" and model.device.type != "cuda":
            raise ValueError("cuda_graphs decoding needs the model on a CUDA device")
        static = self.mode != "eager"
        self.cache = model.backbone.new_cache(steps, static=static) if use_cache else None
        self.prefilled = False
        self.graph: _GraphedStep | None = None

    def __call__(self, inputs: Tensor, controls: Mapping[str, Tensor] | None, memory: Tensor, memory_mask: Tensor,
                 fused: FusedTables) -> Tensor:
        m = self.model
        if self.mode == "eager" or not self.prefilled:  # the prefill runs eagerly (its length varies)
            self.prefilled = self.cache is not None
            return m._logits(inputs, controls, memory, memory_mask, self.cache, fused)
        if self.mode == "compile":
            return compiled_logits(m)(inputs, controls, memory, memory_mask, self.cache, fused)
        if self.graph is None:
            self.graph = _GraphedStep(compiled_logits(m), inputs, controls, memory, memory_mask, self.cache, fused)
        return self.graph(inputs, controls)


class _GraphedStep:
    """One compiled single step captured into a CUDA graph; each call copies its inputs in and replays it."""

    def __init__(self, fn: Callable, inputs: Tensor, controls: Mapping[str, Tensor] | None, memory: Tensor,
                 memory_mask: Tensor, cache, fused: FusedTables) -> None:
        self.inputs = inputs.clone()
        self.controls = {k: v.clone() for k, v in controls.items()} if controls is not None else None
        position = cache.start.clone()

        def run() -> Tensor:
            return fn(self.inputs, self.controls, memory, memory_mask, cache, fused)

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up runs (compilation, allocator) before the capture
            for _ in range(2):
                run()
                cache.reset(position)  # the warm-ups wrote at this step's position: the step rewrites it
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = run()  # recorded, not run: the position is still this step's

    def __call__(self, inputs: Tensor, controls: Mapping[str, Tensor] | None) -> Tensor:
        self.inputs.copy_(inputs)
        if self.controls is not None:
            for k, v in controls.items():
                self.controls[k].copy_(v)
        self.graph.replay()
        return self.out
