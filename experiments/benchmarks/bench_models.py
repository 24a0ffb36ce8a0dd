"""Inference speed of the two paradigms (section 5.4): AR decoding with and without the KV cache, FM Euler steps.

Builds randomly initialised models of a size preset (default ``tiny``) and times, per batch size,
``ARModel.generate`` (tokens/s = B * K * frames / s, with and without KV cache) and ``FMModel.sample``
with Euler (steps/s and samples/s). CFG runs its branches in one batch, as in sampling.

Examples::

    python experiments/benchmarks/bench_models.py                       # cpu (or cuda if present), tiny
    python experiments/benchmarks/bench_models.py --device cuda --preset small --frames 500
    python experiments/benchmarks/bench_models.py --batches 1 4 --out runs/bench/models_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from arfm.models.build import SIZES, build_model, count_parameters


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timeit(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("::")[-1])
    p.add_argument("--out", default="runs/bench/models.json", help="JSON output path")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda[:i]")
    p.add_argument("--preset", default="tiny", choices=list(SIZES), help="backbone size")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--frames", type=int, default=200, help="latent frames per sample (tiny: 4 s at 50 Hz)")
    p.add_argument("--euler-steps", type=int, default=16, help="FM Euler steps (tiny preset's sample.steps)")
    p.add_argument("--cfg", type=float, default=3.0, help="CFG weight (branches run as one batch)")
    p.add_argument("--n-codebooks", type=int, default=4)
    p.add_argument("--codebook-size", type=int, default=256, help="tiny codec's codebook size")
    p.add_argument("--latent-dim", type=int, default=32, help="tiny codec's latent dimension")
    p.add_argument("--text-dim", type=int, default=384, help="MiniLM width")
    p.add_argument("--text-len", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2, help="timed runs per setting (best is kept)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: fastest for tiny ops on a shared box; 0 keeps torch's default)")
    p.add_argument("--skip-no-cache", action="store_true", help="skip the (quadratic) no-cache AR decoding")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    dims = dict(preset=args.preset, text_dim=args.text_dim, n_codebooks=args.n_codebooks,
                codebook_size=args.codebook_size, latent_dim=args.latent_dim)
    ar = build_model("ar", **dims).to(device).eval()
    fm = build_model("fm", **dims).to(device).eval()
    results = []
    for b in args.batches:
        text = torch.randn(b, args.text_len, args.text_dim, device=device)
        mask = torch.ones(b, args.text_len, dtype=torch.bool, device=device)
        for cache in (True, False):
            if not cache and args.skip_no_cache:
                continue
            sec = _timeit(lambda: ar.generate(text, mask, args.frames, top_k=250, cfg=args.cfg, use_cache=cache),
                          device, args.repeats)
            n_steps = args.frames + args.n_codebooks - 1
            results.append({"paradigm": "ar", "batch": b, "kv_cache": cache, "seconds": sec,
                            "tokens_per_s": b * args.n_codebooks * args.frames / sec,
                            "decode_steps_per_s": n_steps / sec, "samples_per_s": b / sec})
            print(f"ar  B={b:3d} kv_cache={cache!s:5}  {results[-1]['tokens_per_s']:10.1f} tokens/s  "
                  f"{sec:7.3f} s/batch", flush=True)
        info = {}

        def run_fm():
            info.update(fm.sample(text, mask, args.frames, solver="euler", steps=args.euler_steps, cfg=args.cfg)[1])

        sec = _timeit(run_fm, device, args.repeats)
        results.append({"paradigm": "fm", "batch": b, "solver": "euler", "steps": args.euler_steps,
                        "nfe": info.get("nfe"), "seconds": sec, "steps_per_s": args.euler_steps / sec,
                        "samples_per_s": b / sec})
        print(f"fm  B={b:3d} euler x{args.euler_steps}      {results[-1]['steps_per_s']:10.1f} steps/s   "
              f"{sec:7.3f} s/batch", flush=True)

    report = {
        "benchmark": "models",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "preset": args.preset,
        "params": {"ar": count_parameters(ar), "fm": count_parameters(fm)},
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
