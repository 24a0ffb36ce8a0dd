"""The Serve side of the inference benchmark: the same measurements through the HTTP endpoint, and Serve against
the direct ``Generator`` call.

One Serve application on 127.0.0.1 serves untrained AR and FM models of the benchmark's job preset at each depth
measured (``ar-L2``, ``fm-L24`` ...). A point of a figure is a burst of ``batch`` concurrent requests to one model
whose ``max_batch_size`` is set to ``batch`` first (through ``user_config``: the replica is reconfigured, not
reloaded), so the burst is generated as one batch as soon as it has arrived. Through Serve a request includes what
the bare model timings leave out: text encoding, codec decoding, WAV encoding and HTTP.

``serve_vs_direct``: the throughput of ``n`` concurrent requests through Serve (``@serve.batch`` forming the
batches) over the throughput of one direct ``Generator.generate`` call on the same ``n`` requests with the same
batch size, in this process, on a model built from the same spec (same weights). Runs alternate.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from typing import Any

from arfm.serving.config import ServeConfig, validate


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_config(job_preset: str, layers: list[int], max_seconds: float, threads: int, max_batch: int,
                 wait_s: float, largest_batch: int | None = None) -> ServeConfig:
    """``largest_batch``: the largest batch any point will ask for (sets ``max_ongoing_requests``)."""
    models = [{"name": f"{p}-L{n}", "random_init": p, "preset": job_preset, "set": [f"model.layers={n}"],
               "max_seconds": max_seconds, "threads": threads, "ray_actor_options": {"num_cpus": 0},
               "batch": {"max_batch_size": max_batch, "batch_wait_timeout_s": wait_s}, "health_probe_s": 3600,
               "max_ongoing_requests": 2 * max(max_batch, largest_batch or 0)}
              for n in layers for p in ("ar", "fm")]
    return validate({"port": _free_port(), "models": models, "app_name": "arfm-bench",
                     "limits": {"max_steps": 1000, "request_timeout_s": 3600}})


def _prompts(n: int) -> list[str]:
    words = ["calm lofi piano", "fast rock with distorted guitars", "ambient pad", "techno, 128 bpm",
             "folk guitar and voice", "orchestral strings", "jazz trio, brushed drums", "reggae bass line"]
    return [f"{words[i % len(words)]} #{i}" for i in range(n)]


class ServeBench:
    def __init__(self, cfg: ServeConfig) -> None:
        import ray

        from arfm.serving.app import start

        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False)
        self.cfg = cfg
        self.url = start(cfg)
        self._batch: dict[str, dict[str, Any]] = {m.name: m.batch.model_dump() for m in cfg.models}

    def close(self) -> None:
        from ray import serve

        serve.delete(self.cfg.app_name)

    def set_batch(self, models: list[str], max_batch_size: int, wait_s: float) -> None:
        """Reconfigure these models' ``@serve.batch`` settings on their live replicas (``user_config``), in one
        redeployment (each takes seconds)."""
        from ray import serve

        from arfm.serving.app import compose

        want = {"max_batch_size": max_batch_size, "batch_wait_timeout_s": wait_s}
        if all(self._batch.get(m) == want for m in models):
            return
        self._batch.update({m: want for m in models})
        overrides = {f"model-{m}": {"user_config": b} for m, b in self._batch.items()}
        serve.run(compose(self.cfg, overrides), name=self.cfg.app_name, route_prefix=self.cfg.route_prefix)

    def burst(self, bodies: list[dict[str, Any]]) -> dict[str, Any]:
        """All ``bodies`` at once; wall time, per-request latencies and the batch sizes reported."""
        import httpx

        async def go():
            async with httpx.AsyncClient(base_url=self.url, timeout=3600,
                                         limits=httpx.Limits(max_connections=len(bodies))) as c:
                async def one(body):
                    t0 = time.perf_counter()
                    r = await c.post("/v1/generate", json=body)
                    r.raise_for_status()
                    return time.perf_counter() - t0, int(r.headers["x-batch-size"])

                t0 = time.perf_counter()
                res = await asyncio.gather(*(one(b) for b in bodies))
                return time.perf_counter() - t0, res

        wall, res = asyncio.run(go())
        return {"wall_s": wall, "latencies_s": [r[0] for r in res], "batch_sizes": sorted({r[1] for r in res})}

    def point(self, model: str, batch: int, seconds: float, sample: dict[str, Any], repeats: int,
              together: list[str] = ()) -> dict[str, Any]:
        """One figure point: ``batch`` requests generated as one batch; the median of ``repeats`` after a warm-up.
        ``together``: other models given the same batch settings now (one redeployment for all)."""
        self.set_batch([model, *together], batch, 5.0)  # the batch closes when the burst has arrived, not after
        bodies = [{"model": model, "prompt": p, "seconds": seconds, "seed": i, "sample": sample}
                  for i, p in enumerate(_prompts(batch))]
        runs = [self.burst(bodies) for _ in range(repeats + 1)][1:]
        sizes = sorted({b for r in runs for b in r["batch_sizes"]})
        if sizes != [batch]:
            raise RuntimeError(f"a burst of {batch} requests to {model} was split into batches of {sizes}")
        wall = statistics.median(r["wall_s"] for r in runs)
        return {"latency_s": wall, "per_sample_latency_s": wall / batch, "samples_per_s": batch / wall,
                "request_latency_s": [x for r in runs for x in r["latencies_s"]], "batch_sizes": sizes}

    def serve_vs_direct(self, model: str, n: int, max_batch: int, wait_s: float, seconds: float,
                        repeats: int) -> dict[str, Any]:
        from arfm.generate import GenerationRequest
        from arfm.serving.models import LoadedModel

        self.set_batch([model], max_batch, wait_s)
        spec = next(m for m in self.cfg.models if m.name == model)
        direct = LoadedModel(spec)  # the same spec: the same weights, sampling defaults and text encoder
        prompts = _prompts(n)
        bodies = [{"model": model, "prompt": p, "seconds": seconds, "seed": i} for i, p in enumerate(prompts)]
        requests = [GenerationRequest(p, seconds=seconds, seed=i) for i, p in enumerate(prompts)]

        def run_direct() -> float:
            t0 = time.perf_counter()
            direct.gen.generate(requests, sample=direct.sample, batch_size=max_batch)
            return time.perf_counter() - t0

        self.burst(bodies)  # warm-ups
        run_direct()
        serve_runs, direct_runs = [], []
        for _ in range(repeats):  # alternate: both see the same machine
            serve_runs.append(self.burst(bodies))
            direct_runs.append(run_direct())
        best_serve = statistics.median(r["wall_s"] for r in serve_runs)
        best_direct = statistics.median(direct_runs)
        sizes = sorted({b for r in serve_runs for b in r["batch_sizes"]})
        return {"requests": n, "seconds": seconds, "max_batch_size": max_batch, "batch_wait_timeout_s": wait_s,
                "serve_s": [r["wall_s"] for r in serve_runs], "direct_s": direct_runs,
                "serve_samples_per_s": n / best_serve, "direct_samples_per_s": n / best_direct,
                "serve_batch_sizes": sizes, "ratio": best_direct / best_serve}
