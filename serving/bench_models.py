"""The bare-model side of the inference benchmark: timings of the models themselves, no codec, no text encoder.

* :func:`peer_comparison` - our AR decoding against Hugging Face transformers'
  ``MusicgenForConditionalGeneration.generate()`` built at the same decoder size (layers, width, heads, FFN),
  codebooks and vocabulary, frame count and batch: greedy, no CFG, the same precomputed text features on both
  sides, codec decode excluded on both sides (the peer's ``audio_encoder.decode`` is replaced by a function that
  returns the codes). Runs alternate between the two so both see the same machine load.
* :func:`ar_step_vs_forward` and :func:`fm_step_vs_forward` - one decoding step (one Euler step) of the real
  sampling loop against one bare forward of the network it calls.
* :func:`sweep` - samples/s and per-sample latency of ``ARModel.generate`` (KV cache) and ``FMModel.sample``
  (Euler with several step counts, dopri5) over batch sizes, durations and depths (figures 5, 6, 7, 10).

Times are wall-clock seconds from ``time.perf_counter`` (CUDA synchronized); a figure is the median of
``repeats`` runs after one warm-up run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from arfm.models.build import build_model


def timed(fn: Callable[[], Any], repeats: int, device: torch.device) -> list[float]:
    """Seconds of ``repeats`` runs of ``fn`` after one warm-up run."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return out


def _text(batch: int, length: int, dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(batch, length, dim, generator=g).to(device),
            torch.ones(batch, length, dtype=torch.bool, device=device))


def build(paradigm: str, dims: dict[str, Any], device: torch.device, **over: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    kw = {k: dims[k] for k in ("layers", "dim", "heads", "ffn", "text_dim", "n_codebooks", "codebook_size",
                               "latent_dim")}
    return build_model(paradigm, **{**kw, **over}).to(device).eval()


# ------------------------------------------------------------------------------------------------ the peer
def hf_musicgen(dims: dict[str, Any], frames: int, device: torch.device):
    """A randomly initialised ``MusicgenForConditionalGeneration`` with our decoder's size; its T5 text encoder and
    EnCodec are minimal, unused (text features are given, codec decode is replaced)."""
    from transformers import (EncodecConfig, MusicgenConfig, MusicgenDecoderConfig,
                              MusicgenForConditionalGeneration, T5Config)

    v, k = dims["codebook_size"], dims["n_codebooks"]
    decoder = MusicgenDecoderConfig(vocab_size=v, hidden_size=dims["dim"], num_hidden_layers=dims["layers"],
                                    num_attention_heads=dims["heads"], ffn_dim=dims["ffn"], num_codebooks=k,
                                    max_position_embeddings=frames + k + 8, pad_token_id=v, bos_token_id=v,
                                    audio_channels=1)
    text = T5Config(d_model=dims["text_dim"], num_layers=1, num_heads=1, d_ff=16, d_kv=8, vocab_size=16)
    codec = EncodecConfig(codebook_size=v, num_filters=2, hidden_size=8, upsampling_ratios=[8, 5, 4, 4],
                          num_lstm_layers=1, sampling_rate=32000, target_bandwidths=[k * 50 * 11 / 1000])
    torch.manual_seed(0)
    model = MusicgenForConditionalGeneration(MusicgenConfig.from_sub_models_config(text, codec, decoder))
    model = model.to(device).eval()

    class _Codes:  # what audio_encoder.decode returns, holding the codes: codec decode excluded
        def __init__(self, codes):
            self.audio_values = codes

    model.audio_encoder.decode = lambda codes, audio_scales=None, **kw: _Codes(codes)
    model.generation_config.pad_token_id = v
    model.generation_config.decoder_start_token_id = v
    return model


def peer_comparison(dims: dict[str, Any], frames: int, batches: list[int], repeats: int,
                    device: torch.device) -> dict[str, Any]:
    """Tokens/s of our AR decode and of the peer's ``generate()``, alternating runs, per batch size."""
    ours = build("ar", dims, device)
    peer = hf_musicgen(dims, frames, device)
    k = dims["n_codebooks"]
    rows = []
    for b in batches:
        text, mask = _text(b, dims["text_len"], dims["text_dim"], device)
        out_ours = ours.generate(text, mask, frames, top_k=1, cfg=1.0)
        out_peer = peer.generate(encoder_outputs=(text,), attention_mask=mask.long(), do_sample=False,
                                 guidance_scale=1.0, max_new_tokens=frames + k - 1)
        assert tuple(out_ours.shape) == (b, k, frames) and out_peer.shape[-2:] == (k, frames), \
            (out_ours.shape, out_peer.shape)  # both decode the same number of frames and codebooks
        times: dict[str, list[float]] = {"ours": [], "peer": []}
        for _ in range(repeats):  # alternate: both sides see the same machine
            times["ours"] += timed(lambda: ours.generate(text, mask, frames, top_k=1, cfg=1.0), 1, device)
            times["peer"] += timed(lambda: peer.generate(encoder_outputs=(text,), attention_mask=mask.long(),
                                                         do_sample=False, guidance_scale=1.0,
                                                         max_new_tokens=frames + k - 1), 1, device)
        tokens = b * k * frames
        best = {side: statistics.median(t) for side, t in times.items()}
        rows.append({"batch": b, "frames": frames, "tokens": tokens, "seconds": times,
                     "ours_tokens_per_s": tokens / best["ours"], "peer_tokens_per_s": tokens / best["peer"],
                     "ratio": best["peer"] / best["ours"]})
    return {"rows": rows, "ours_decoding": ours.decoding}


# ------------------------------------------------------------------------------------------------ steps
def ar_step_vs_forward(dims: dict[str, Any], frames: int, repeats: int, device: torch.device) -> dict[str, Any]:
    """One step of ``ARModel.generate`` (batch 1, greedy, no CFG: decode time / steps) over one bare cached forward
    of the backbone (``Transformer.forward`` on one new step, at the middle of the same cache), and the heads'
    product of one step timed alone."""
    import torch.nn.functional as F

    model = build("ar", dims, device)
    text, mask = _text(1, dims["text_len"], dims["text_dim"], device)
    steps = frames + dims["n_codebooks"] - 1
    step = statistics.median(timed(lambda: model.generate(text, mask, frames, top_k=1, cfg=1.0), repeats,
                                   device)) / steps
    with torch.no_grad():
        memory, mmask = model.text(text, mask)
        cache = model.backbone.new_cache(steps)
        half = steps // 2
        model.backbone(torch.randn(1, half, dims["dim"], device=device), memory, mmask, cache)
        x = torch.randn(1, 1, dims["dim"], device=device)
        fused = model.fused_tables()
        h = torch.randn(1, 1, dims["dim"], device=device)
        n = 200

        def forward():
            for _ in range(n):
                cache.reset(half)
                model.backbone(x, memory, mmask, cache)

        def heads():
            for _ in range(n):
                F.linear(h, fused.heads)

        fwd = statistics.median(timed(forward, repeats, device)) / n
        head = statistics.median(timed(heads, repeats, device)) / n
    return {"step_s": step, "forward_s": fwd, "heads_alone_s": head, "ratio": step / fwd,
            "batch": 1, "frames": frames}


def fm_step_vs_forward(dims: dict[str, Any], frames: int, steps: int, repeats: int,
                       device: torch.device) -> dict[str, Any]:
    """One Euler step of ``FMModel.sample`` (batch 1, no CFG: sampling time / steps) over one bare forward of the
    velocity network on the same shapes."""
    model = build("fm", dims, device)
    text, mask = _text(1, dims["text_len"], dims["text_dim"], device)
    sample = statistics.median(timed(lambda: model.sample(text, mask, frames, solver="euler", steps=steps, cfg=1.0),
                       repeats, device)) / steps
    with torch.no_grad():
        memory, mmask = model.text(text, mask)
        x = torch.randn(1, frames, dims["latent_dim"], device=device)
        t = torch.full((1,), 0.5, device=device)
        fwd = statistics.median(timed(lambda: model.velocity(x, t, memory, mmask), repeats * 3, device))
    return {"step_s": sample, "forward_s": fwd, "ratio": sample / fwd, "batch": 1, "frames": frames,
            "steps": steps}


# ------------------------------------------------------------------------------------------------ sweeps
def methods(euler_steps: list[int], dopri5_tol: float) -> list[dict[str, Any]]:
    return ([{"name": "ar-kv", "paradigm": "ar"}]
            + [{"name": f"fm-euler{n}", "paradigm": "fm", "solver": "euler", "steps": n} for n in euler_steps]
            + [{"name": "fm-dopri5", "paradigm": "fm", "solver": "dopri5", "tol": dopri5_tol}])


def run_once(model: torch.nn.Module, method: dict[str, Any], batch: int, frames: int, dims: dict[str, Any],
             cfg: float, repeats: int, device: torch.device) -> dict[str, Any]:
    text, mask = _text(batch, dims["text_len"], dims["text_dim"], device)
    info: dict[str, Any] = {}
    if method["paradigm"] == "ar":
        def fn():
            model.generate(text, mask, frames, top_k=1, cfg=cfg)
    else:
        def fn():
            info.update(model.sample(text, mask, frames, solver=method["solver"], steps=method.get("steps", 1),
                                     cfg=cfg, rtol=method.get("tol", 1e-5), atol=method.get("tol", 1e-5))[1])
    t = statistics.median(timed(fn, repeats, device))
    return {"method": method["name"], "batch": batch, "frames": frames, "latency_s": t,
            "per_sample_latency_s": t / batch, "samples_per_s": batch / t, "nfe": info.get("nfe")}


def sweep(points: list[dict[str, Any]], dims: dict[str, Any], cfg: float, repeats: int,
          device: torch.device, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Each point: ``{"method", "batch", "frames", "layers"}``; models built once per (paradigm, layers). A batch
    that runs out of memory is recorded as such and larger batches of that method are skipped."""
    models: dict[tuple, torch.nn.Module] = {}
    too_big: dict[tuple, int] = {}
    rows = []
    for p in points:
        m, layers = p["method"], p.get("layers", dims["layers"])
        key = (m["name"], layers, p["frames"])
        if key in too_big and p["batch"] >= too_big[key]:
            continue
        mk = (m["paradigm"], layers)
        if mk not in models:
            models[mk] = build(m["paradigm"], dims, device, layers=layers)
        try:
            row = run_once(models[mk], m, p["batch"], p["frames"], dims, cfg, repeats, device)
        except (torch.OutOfMemoryError, RuntimeError) as exc:  # a CPU allocation failure is a RuntimeError
            if "memory" not in str(exc).lower():
                raise
            too_big[key] = p["batch"]
            rows.append({"method": m["name"], "batch": p["batch"], "frames": p["frames"], "layers": layers,
                         "out_of_memory": True})
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        row["layers"] = layers
        rows.append(row)
        log(f"  bare {m['name']:12s} L={layers:2d} B={p['batch']:3d} T={p['frames']:4d}  "
            f"{row['samples_per_s']:8.2f} samples/s  {row['latency_s']:7.3f} s")
    return rows
