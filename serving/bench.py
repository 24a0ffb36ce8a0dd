"""The inference benchmark of section 5.4: ``arfm bench`` and ``experiments/benchmarks/bench_inference.py``.

One run measures, side by side on the same machine:

* the five ratios at the top level of ``bench.json`` (each with its target and whether it is met):
  ``ar_vs_hf_musicgen_b1`` / ``_b16`` (our AR decode tokens/s over transformers' ``MusicgenForConditionalGeneration
  .generate()`` at the same decoder size), ``ar_step_vs_forward``, ``fm_step_vs_forward`` and ``serve_vs_direct``
  (:mod:`.bench_models`, :mod:`.bench_serve`);
* figure 5 (samples/s and per-sample latency over batch size), figures 6 and 7 (latency over duration at a fixed
  batch, shallow and deep), figure 10 (latency over depth x batch): on the bare models (AR with KV cache, FM Euler
  with several step counts and dopri5) and, for the Serve series, through the HTTP endpoint.

Each figure carries a ``method`` string saying what was timed, with how many threads and repeats, and which
statistic is kept (the median). Writes ``OUT/bench.json`` and one PNG per figure; logs both to MLflow (experiment
``arfm-bench``) when an MLflow URI is configured (``$MLFLOW_TRACKING_URI`` or ``tracking_uri``).
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

PARTS = ("ratios", "figure5", "figure6_7", "figure10", "serve")

TARGETS = {  # issue 16, item 4: (comparison, bound)
    "ar_vs_hf_musicgen_b1": (">=", 2.5),
    "ar_vs_hf_musicgen_b16": (">=", 3.0),
    "ar_step_vs_forward": ("<=", 1.5),
    "fm_step_vs_forward": ("<=", 1.05),
    "serve_vs_direct": (">=", 0.9),
}

# Model dimensions of the bare-model figures (the job preset's network and codec sizes, MiniLM text features).
_TINY_DIMS = {"layers": 2, "dim": 64, "heads": 4, "ffn": 128, "text_dim": 384, "text_len": 32, "n_codebooks": 4,
              "codebook_size": 256, "latent_dim": 32}
# The decoder of the transformers comparison (the size the 1.2-1.45x / 2.6-2.8x figures were taken at).
_PEER_DIMS = {"layers": 4, "dim": 256, "heads": 4, "ffn": 1024, "text_dim": 384, "text_len": 32, "n_codebooks": 4,
              "codebook_size": 2048, "latent_dim": 32}

PRESETS: dict[str, dict[str, Any]] = {
    # the smallest configuration: the test of the benchmark itself (seconds; the figures mean nothing)
    "smoke": {"dims": _TINY_DIMS, "peer_dims": {**_TINY_DIMS, "codebook_size": 64}, "peer_frames": 12,
              "step_frames": 16, "fm_ratio_steps": 4, "euler_steps": [4], "dopri5_tol": 1e-2, "repeats": 1,
              "threads": 1,
              "job_preset": "tiny", "frame_rate": 50.0, "cfg": 1.0,
              "figure5": {"batches": [1, 2], "seconds": 0.2},
              "figure6_7": {"layers": [2], "batch": 1, "seconds": [0.1, 0.2], "methods": ["ar-kv", "fm-euler4"]},
              "figure10": {"layers": [1, 2], "batches": [1], "seconds": 0.2, "methods": ["ar-kv", "fm-euler4"]},
              "serve": {"batches": [2], "seconds": 0.2, "fm_steps": 4, "n": 4, "max_batch": 2,
                        "wait_s": 0.05}},
    # CPU, a few minutes on 2 cores
    "tiny": {"dims": _TINY_DIMS, "peer_dims": _PEER_DIMS, "peer_frames": 500, "step_frames": 200,
             "fm_ratio_steps": 50,
             "euler_steps": [10, 25, 50, 200], "dopri5_tol": 1e-3, "repeats": 3, "threads": 2,
             "job_preset": "tiny", "frame_rate": 50.0, "cfg": 1.0,
             "figure5": {"batches": [1, 4, 16, 64], "seconds": 2.0},
             "figure6_7": {"layers": [2, 24], "batch": 1, "seconds": [1.0, 2.0, 4.0, 8.0],
                           "methods": ["ar-kv", "fm-euler25"]},
             "figure10": {"layers": [2, 4, 8, 16, 24], "batches": [1, 16], "seconds": 2.0,
                          "methods": ["ar-kv", "fm-euler25"]},
             "serve": {"batches": [1, 4, 16], "seconds": 2.0, "fm_steps": 25, "n": 32, "max_batch": 16,
                       "wait_s": 0.05}},
    # a GPU: the paper's backbone, batches up to 256 as memory allows
    "paper": {"dims": {**_TINY_DIMS, "layers": 24, "dim": 1024, "heads": 16, "ffn": 4096, "codebook_size": 2048,
                       "latent_dim": 128, "text_dim": 768},
              "peer_dims": _PEER_DIMS, "peer_frames": 500, "step_frames": 500, "fm_ratio_steps": 50,
              "euler_steps": [10, 25, 50, 200],
              "dopri5_tol": 1e-5, "repeats": 3, "threads": 0, "job_preset": "paper", "frame_rate": 50.0,
              "cfg": 1.0,
              "figure5": {"batches": [1, 2, 4, 8, 16, 32, 64, 128, 256], "seconds": 10.0},
              "figure6_7": {"layers": [2, 24], "batch": 1, "seconds": [2.5, 5.0, 10.0, 20.0, 30.0],
                            "methods": ["ar-kv", "fm-euler25"]},
              "figure10": {"layers": [2, 4, 8, 16, 24], "batches": [1, 16, 64], "seconds": 10.0,
                           "methods": ["ar-kv", "fm-euler25"]},
              "serve": {"batches": [1, 16, 64], "seconds": 10.0, "fm_steps": 25, "n": 64, "max_batch": 32,
                        "wait_s": 0.05}},
}


def _ratio(key: str, value: float, detail: dict[str, Any]) -> dict[str, Any]:
    op, bound = TARGETS[key]
    met = value >= bound if op == ">=" else value <= bound
    return {"value": value, "target": f"{op} {bound}", "met": bool(met), "detail": detail}


def _frames(seconds: float, frame_rate: float) -> int:
    return max(1, round(seconds * frame_rate))


def _method(s: dict[str, Any], what: str, device: str) -> str:
    return (f"{what}; wall-clock time.perf_counter{' (CUDA synchronized)' if device.startswith('cuda') else ''}, "
            f"torch intra-op threads {s['threads'] or 'default'}, median of {s['repeats']} runs after one warm-up; "
            f"untrained models, greedy AR (top_k=1), CFG weight {s['cfg']} (1 = one branch), codec decode and text "
            "encoding excluded on the bare models, included through Serve")


def run(preset: str, out: Path, device: str | None = None, parts=PARTS, log_mlflow: bool = True,
        tracking_uri: str | None = None, log=print) -> dict[str, Any]:
    """Run the benchmark ``preset`` (``smoke``, ``tiny``, ``paper``); write ``out/bench.json`` and the PNGs."""
    import torch

    from arfm.serving import bench_models as bm

    if preset not in PRESETS:
        raise ValueError(f"--preset {preset!r}: choose one of {', '.join(PRESETS)}")
    bad = sorted(set(parts) - set(PARTS))
    if bad:
        raise ValueError(f"parts {bad}: choose from {', '.join(PARTS)}")
    s = PRESETS[preset]
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if s["threads"]:
        torch.set_num_threads(s["threads"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dims, reps, fr = s["dims"], s["repeats"], s["frame_rate"]
    t_start = time.perf_counter()
    report: dict[str, Any] = {"ratios": {}, "figures": {}, "preset": preset, "device": str(dev),
                              "threads": torch.get_num_threads(), "torch": torch.__version__,
                              "machine": {"cpu": platform.processor() or platform.machine(),
                                          "cpus": os.cpu_count(),
                                          "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None},
                              "settings": s}
    if "ratios" in parts:
        log("ratios: our AR decode vs transformers' MusicgenForConditionalGeneration.generate()")
        peer = bm.peer_comparison(s["peer_dims"], s["peer_frames"], [1, 16], reps, dev)
        for row in peer["rows"]:
            log(f"  B={row['batch']:2d}  ours {row['ours_tokens_per_s']:9.0f} tok/s  peer "
                f"{row['peer_tokens_per_s']:9.0f} tok/s  ratio {row['ratio']:.2f}")
            report["ratios"][f"ar_vs_hf_musicgen_b{row['batch']}"] = _ratio(
                f"ar_vs_hf_musicgen_b{row['batch']}", row["ratio"],
                {**row, "dims": s["peer_dims"], "decoding": peer["ours_decoding"],
                 "method": _method(s, "tokens/s = batch x codebooks x frames / seconds of one whole decode; ours: "
                                   "ARModel.generate(top_k=1, cfg=1); peer: generate(do_sample=False, "
                                   "guidance_scale=1) with the codec decode replaced by an identity; runs "
                                   "alternate", str(dev))})
        ar = bm.ar_step_vs_forward(dims, s["step_frames"], reps, dev)
        report["ratios"]["ar_step_vs_forward"] = _ratio("ar_step_vs_forward", ar["ratio"], {
            **ar, "method": _method(s, "one step = ARModel.generate time / steps (batch 1); forward = "
                                    "Transformer.forward on one new position of a half-full KV cache", str(dev))})
        fm = bm.fm_step_vs_forward(dims, s["step_frames"], s["fm_ratio_steps"], reps, dev)
        report["ratios"]["fm_step_vs_forward"] = _ratio("fm_step_vs_forward", fm["ratio"], {
            **fm, "method": _method(s, f"one step = FMModel.sample(euler, {s['fm_ratio_steps']} steps: the "
                                    "SampleConfig default) time / steps (batch 1), setup included; forward = "
                                    "FMModel.velocity on the same shapes", str(dev))})
        log(f"  ar_step_vs_forward {ar['ratio']:.3f}  fm_step_vs_forward {fm['ratio']:.3f}")
    methods = {m["name"]: m for m in bm.methods(s["euler_steps"], s["dopri5_tol"])}
    if "figure5" in parts:
        f5 = s["figure5"]
        log("figure 5: samples/s over batch size")
        pts = [{"method": m, "batch": b, "frames": _frames(f5["seconds"], fr)}
               for m in methods.values() for b in f5["batches"]]
        report["figures"]["figure5"] = {"seconds": f5["seconds"], "layers": dims["layers"], "bare": bm.sweep(
            pts, dims, s["cfg"], reps, dev, log), "method": _method(
            s, "latency of one batch (generate / sample); samples/s = batch / latency", str(dev))}
    if "figure6_7" in parts:
        f6 = s["figure6_7"]
        log("figures 6 and 7: latency over duration")
        pts = [{"method": methods[m], "batch": f6["batch"], "frames": _frames(sec, fr), "layers": n}
               for n in f6["layers"] for m in f6["methods"] for sec in f6["seconds"]]
        rows = bm.sweep(pts, dims, s["cfg"], reps, dev, log)
        for r in rows:
            r["seconds"] = r["frames"] / fr
        report["figures"]["figure6_7"] = {"batch": f6["batch"], "bare": rows, "method": _method(
            s, f"latency of one batch of {f6['batch']} over the generated duration", str(dev))}
    if "figure10" in parts:
        f10 = s["figure10"]
        log("figure 10: latency over layers x batch")
        pts = [{"method": methods[m], "batch": b, "frames": _frames(f10["seconds"], fr), "layers": n}
               for m in f10["methods"] for b in f10["batches"] for n in f10["layers"]]
        report["figures"]["figure10"] = {"seconds": f10["seconds"], "bare": bm.sweep(
            pts, dims, s["cfg"], reps, dev, log), "method": _method(
            s, "latency of one batch over the backbone depth", str(dev))}
    if "serve" in parts:
        _serve(s, report, str(dev), log)
    report["wall_s"] = time.perf_counter() - t_start
    (out / "bench.json").write_text(json.dumps(report, indent=1, default=_json_default))
    report["plots"] = [str(p) for p in plots(report, out)]
    (out / "bench.json").write_text(json.dumps(report, indent=1, default=_json_default))
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if log_mlflow and uri:
        report["mlflow_run_id"] = log_to_mlflow(report, out, uri)
        (out / "bench.json").write_text(json.dumps(report, indent=1, default=_json_default))
    elif log_mlflow:
        log("MLflow: not logged (no MLFLOW_TRACKING_URI)")
    return report


def _json_default(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)


def _serve(s: dict[str, Any], report: dict[str, Any], device: str, log) -> None:
    """The Serve series of figure 5 (AR and FM Euler at the bare models' depth) and ``serve_vs_direct``."""
    from arfm.serving.bench_serve import ServeBench, bench_config

    sv = s["serve"]
    layers = s["dims"]["layers"]
    cfg = bench_config(s["job_preset"], [layers], max_seconds=max(sv["seconds"], 1.0),
                       threads=s["threads"] or None, max_batch=sv["max_batch"],
                       largest_batch=max(sv["batches"]),
                       wait_s=sv["wait_s"])
    log(f"Serve: starting {', '.join(m.name for m in cfg.models)} on 127.0.0.1")
    bench = ServeBench(cfg)
    try:
        # serve_vs_direct first: the application starts with its batch settings (no redeployment)
        svd = bench.serve_vs_direct(f"ar-L{layers}", sv["n"], sv["max_batch"], sv["wait_s"], sv["seconds"],
                                    s["repeats"])
        log(f"  serve_vs_direct {svd['ratio']:.3f}  (batches formed: {svd['serve_batch_sizes']})")
        report["ratios"]["serve_vs_direct"] = _ratio("serve_vs_direct", svd["ratio"], {
            **svd, "model": f"ar-L{layers}", "method": _method(
                s, f"{sv['n']} concurrent requests through Serve (@serve.batch forms the batches) against one "
                   f"direct Generator.generate call on the same requests with batch_size {sv['max_batch']}, in "
                   "the driver process; both include text encoding and codec decoding; runs alternate", device)})
        rows = []
        names = [f"ar-L{layers}", f"fm-L{layers}"]
        for b in sv["batches"]:
            for name, sample, method in (
                    (names[0], {"top_k": 1, "cfg": s["cfg"]}, "ar-kv"),
                    (names[1], {"solver": "euler", "steps": sv["fm_steps"], "cfg": s["cfg"]},
                     f"fm-euler{sv['fm_steps']}")):
                p = bench.point(name, b, sv["seconds"], sample, s["repeats"], together=names)
                rows.append({"method": method, "batch": b, "seconds": sv["seconds"], "layers": layers, **p})
                log(f"  serve {method:12s} B={b:3d}  {p['samples_per_s']:8.2f} samples/s  {p['latency_s']:7.3f} s")
        report["figures"].setdefault("figure5", {})["serve"] = rows
        report["figures"]["figure5"]["serve_method"] = _method(
            s, "wall time of a burst of `batch` concurrent POST /v1/generate requests formed into one "
               "@serve.batch batch (max_batch_size set to the burst size); samples/s = batch / wall time",
            device)
    finally:
        bench.close()


def plots(report: dict[str, Any], out: Path) -> list[Path]:
    """One PNG per figure (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def ok(rows):
        return [r for r in rows if not r.get("out_of_memory")]

    def series(rows, key):
        by: dict[str, list] = {}
        for r in ok(rows):
            by.setdefault(r["method"], []).append(r)
        return {m: sorted(rs, key=lambda r: r[key]) for m, rs in by.items()}

    written = []
    figs = report["figures"]
    if "figure5" in figs and (figs["figure5"].get("bare") or figs["figure5"].get("serve")):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for src, style in (("bare", "-o"), ("serve", "--s")):
            for m, rs in series(figs["figure5"].get(src, []), "batch").items():
                xs = [r["batch"] for r in rs]
                axes[0].plot(xs, [r["samples_per_s"] for r in rs], style, label=f"{m} ({src})")
                axes[1].plot(xs, [r["per_sample_latency_s"] for r in rs], style, label=f"{m} ({src})")
        for ax, yl in zip(axes, ("samples / s", "latency per sample (s)")):
            ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel=yl)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"Figure 5: throughput over batch size ({report['device']}, {report['preset']})")
        written.append(_save(fig, out / "figure5_batch.png", plt))
    if figs.get("figure6_7", {}).get("bare"):
        rows = figs["figure6_7"]["bare"]
        layers = sorted({r["layers"] for r in ok(rows)})
        fig, axes = plt.subplots(1, len(layers), figsize=(5.5 * len(layers), 4), squeeze=False)
        for ax, n in zip(axes[0], layers):
            for m, rs in series([r for r in rows if r["layers"] == n], "frames").items():
                ax.plot([r["seconds"] for r in rs], [r["latency_s"] for r in rs], "-o", label=m)
            ax.set(xlabel="generated seconds", ylabel="latency (s)", title=f"{n} layers, batch "
                   f"{figs['figure6_7']['batch']}")
            ax.legend(fontsize=7)
        fig.suptitle("Figures 6 and 7: latency over duration")
        written.append(_save(fig, out / "figure6_7_duration.png", plt))
    if figs.get("figure10", {}).get("bare"):
        rows = ok(figs["figure10"]["bare"])
        fig, ax = plt.subplots(figsize=(6, 4))
        for b in sorted({r["batch"] for r in rows}):
            for m, rs in series([r for r in rows if r["batch"] == b], "layers").items():
                ax.plot([r["layers"] for r in rs], [r["latency_s"] for r in rs], "-o", label=f"{m}, batch {b}")
        ax.set(xlabel="layers", ylabel="latency (s)", yscale="log", title="Figure 10: latency over depth x batch")
        ax.legend(fontsize=7)
        written.append(_save(fig, out / "figure10_layers.png", plt))
    if report["ratios"]:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        keys = list(report["ratios"])
        vals = [report["ratios"][k]["value"] for k in keys]
        ax.barh(keys, vals, color=["tab:green" if report["ratios"][k]["met"] else "tab:red" for k in keys])
        for i, k in enumerate(keys):
            ax.plot([TARGETS[k][1]] * 2, [i - 0.4, i + 0.4], "k-")
        ax.set(xscale="log", xlabel="ratio (black: target)", title="Ratios against their targets")
        written.append(_save(fig, out / "ratios.png", plt))
    return written


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def log_to_mlflow(report: dict[str, Any], out: Path, uri: str) -> str:
    """One run in experiment ``arfm-bench``: the ratios as metrics, the settings as params, JSON and PNGs."""
    from arfm import tracking

    client = tracking.client(uri)
    exp = tracking.get_or_create_experiment("arfm-bench", uri)
    run = client.create_run(exp, tags={"job": "bench", "preset": report["preset"], "device": report["device"],
                                       "git_commit": tracking.git_commit()})
    rid = run.info.run_id
    for key, r in report["ratios"].items():
        client.log_metric(rid, key, r["value"])
    client.log_param(rid, "threads", report["threads"])
    client.log_param(rid, "preset", report["preset"])
    client.log_artifact(rid, str(out / "bench.json"))
    for p in report.get("plots", []):
        client.log_artifact(rid, p)
    client.set_terminated(rid)
    return rid
