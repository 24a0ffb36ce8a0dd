"""Preprocessing throughput (seconds of audio per second) for 1 and 2 Ray workers on one synthetic set.

    python experiments/benchmarks/bench_preprocess.py --out runs/bench/preprocess.json
    python experiments/benchmarks/bench_preprocess.py --preset small --clips 24 --workers 1,2

The codec is an untrained one of the preset's configuration with its normalization set beforehand (weights do
not change the cost; the normalization pass is not part of what is measured), unless ``--codec DIR`` is given.
Each measurement writes into a fresh shard folder; wall time includes starting Ray Data's actors (models load
once per actor), which is the cost a user pays; ``audio_s_per_compute_s`` is the steady state inside the actors.
Settings alternate over ``--repeat`` rounds and the best round is reported in ``runs`` (all in ``trials``);
the machine's load average is recorded because it may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench/preprocess.json")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    ap.add_argument("--clips", type=int, default=40)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--workers", default="1,2", help="comma-separated Ray worker counts")
    ap.add_argument("--local", action="store_true", help="also measure the in-process executor (no Ray)")
    ap.add_argument("--codec", default=None, help="codec directory (default: untrained codec of the preset)")
    ap.add_argument("--dataset", default=None, help="existing dataset folder (default: synthesize one)")
    ap.add_argument("--clips-per-shard", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=2, help="runs per setting (alternating); the best is reported")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args(argv)

    import ray
    import torch

    from arfm.config import resolve
    from arfm.data.preprocess import preprocess

    cfg = resolve(args.preset, overrides=[f"data.segment_seconds={args.seconds}", *args.overrides])
    counts = [int(w) for w in args.workers.split(",") if w.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="bench_pp_"))
    try:
        if args.dataset:
            ds_dir = Path(args.dataset)
            t_synth = None
        else:
            from arfm.data.synth import synthesize_dataset

            ds_dir = tmp / "ds"
            t = time.perf_counter()
            synthesize_dataset(ds_dir, n=args.clips, seconds=args.seconds, seed=0, workers=2,
                               sample_rate=cfg.data.sample_rate)
            t_synth = time.perf_counter() - t
        if args.codec:
            codec_dir = args.codec
        else:
            from arfm.latents import Codec

            codec = Codec.from_config(cfg.codec, cfg.data.sample_rate)
            codec.set_normalization(0.0, 1.0, note="benchmark placeholder")
            codec_dir = str(codec.save(tmp / "codec"))
        ray.init(num_cpus=max(counts + [1]), include_dashboard=False, log_to_driver=False)
        trials = []
        plan = [("ray", w) for w in counts] + ([("local", 1)] if args.local else [])
        for rep in range(args.repeat):
            for executor, w in plan:
                out = tmp / f"shards-{executor}-{w}-{rep}"
                load_before = os.getloadavg()[0]
                t = time.perf_counter()
                summary = preprocess(cfg, ds_dir, codec_dir, out, workers=w, clips_per_shard=args.clips_per_shard,
                                     executor=executor, progress=False)
                wall = time.perf_counter() - t
                trials.append({
                    "executor": executor, "workers": w, "repeat": rep, "audio_seconds": summary["seconds"],
                    "wall_s": round(wall, 3), "audio_s_per_s": round(summary["seconds"] / wall, 3),
                    # per-actor steady state: audio over the time spent inside shards (no start-up, no model load)
                    "audio_s_per_compute_s": round(summary["seconds"] / max(summary["shard_compute_s"], 1e-9), 3),
                    "model_load_s": summary["model_load_s"], "rows": summary["splits"], "shards": summary["written"],
                    "load_avg_before": round(load_before, 2), "load_avg_after": round(os.getloadavg()[0], 2)})
                shutil.rmtree(out, ignore_errors=True)
                print(json.dumps(trials[-1]), flush=True)
        runs = [max((r for r in trials if (r["executor"], r["workers"]) == key), key=lambda r: r["audio_s_per_s"])
                for key in plan]
        ray.shutdown()
        result = {
            "benchmark": "preprocess", "preset": args.preset, "overrides": args.overrides,
            "clips": args.clips, "clip_seconds": args.seconds, "segment_seconds": cfg.data.segment_seconds,
            "codec": {"frame_rate": cfg.codec.frame_rate, "latent_dim": cfg.codec.latent_dim,
                      "base_channels": cfg.codec.base_channels, "lstm_layers": cfg.codec.lstm_layers,
                      "source": args.codec or "untrained (preset config)"},
            "text_encoder": cfg.text.encoder, "clips_per_shard": args.clips_per_shard, "synth_s": t_synth,
            "runs": runs, "trials": trials,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                        "ray": ray.__version__},
        }
        if len(runs) >= 2 and runs[0]["executor"] == runs[1]["executor"] == "ray":
            result["speedup_2_over_1"] = round(runs[1]["audio_s_per_s"] / runs[0]["audio_s_per_s"], 3)
        out_path = Path(args.out)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out_path}")
        return result
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
