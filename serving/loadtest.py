"""A bounded load generator for a running arfm Serve application (loopback addresses only).

It sends ``n`` generation requests with at most ``concurrency`` in flight, each with its own seed, and stops by
itself: after the ``n`` answers, or after ``timeout_s`` (requests still open are then cancelled and counted as
lost). It reports successes, errors by status, lost requests, latency percentiles and the batch sizes Serve
formed (every answer carries its batch's size in ``X-Batch-Size``: ``k`` answers of size ``b`` are ``k / b``
batches).

    python -m arfm.serving.loadtest --url http://127.0.0.1:8000 --n 200 --concurrency 200 --model ar
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import socket
import time
from collections import Counter
from typing import Any
from urllib.parse import urlparse

import numpy as np

MAX_REQUESTS = 10_000


def check_loopback(url: str) -> None:
    """Refuse any URL whose host does not resolve to a loopback address only."""
    host = urlparse(url).hostname
    if not host:
        raise ValueError(f"{url!r}: no host")
    try:
        addrs = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise ValueError(f"{url!r}: cannot resolve {host!r} ({exc})") from None
    if not addrs or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs):
        raise ValueError(f"{url!r}: the load generator only targets loopback addresses, {host} is {sorted(addrs)}")


async def run(url: str, n: int = 200, concurrency: int = 200, body: dict[str, Any] | None = None,
              timeout_s: float = 300.0) -> dict[str, Any]:
    """Send ``n`` ``POST /v1/generate`` requests (``body`` plus a distinct ``seed`` each); return the report."""
    import httpx

    check_loopback(url)
    if not 1 <= n <= MAX_REQUESTS:
        raise ValueError(f"n must be in [1, {MAX_REQUESTS}], got {n}")
    if not 1 <= concurrency <= n:
        raise ValueError(f"concurrency must be in [1, n], got {concurrency}")
    body = {"prompt": "upbeat funk with slap bass, 110 bpm", "seconds": 1.0, **(body or {})}
    gate = asyncio.Semaphore(concurrency)
    statuses: Counter = Counter()
    latencies: list[float] = []
    sizes: Counter = Counter()
    exceptions: Counter = Counter()

    async def one(client: httpx.AsyncClient, i: int) -> None:
        async with gate:
            t0 = time.perf_counter()
            try:
                r = await client.post("/v1/generate", json={**body, "seed": i})
            except httpx.HTTPError as exc:
                exceptions[type(exc).__name__] += 1
                return
            statuses[r.status_code] += 1
            if r.status_code == 200:
                latencies.append(time.perf_counter() - t0)
                sizes[int(r.headers.get("x-batch-size", 0))] += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as client:
        tasks = [asyncio.create_task(one(client, i)) for i in range(n)]
        done, pending = await asyncio.wait(tasks, timeout=timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    wall = time.perf_counter() - t0
    ok = statuses.get(200, 0)
    lat = np.asarray(latencies) if latencies else np.asarray([np.nan])
    return {
        "url": url, "requests": n, "concurrency": concurrency, "body": body,
        "ok": ok,
        "errors_by_status": {str(k): v for k, v in sorted(statuses.items()) if k != 200},
        "server_errors": sum(v for k, v in statuses.items() if k >= 500),
        "exceptions": dict(exceptions),
        "lost": n - sum(statuses.values()),  # no HTTP answer: a connection error, or cut at timeout_s
        "wall_s": wall,
        "requests_per_s": ok / wall,
        "latency_s": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                      "max": float(lat.max())},
        # k answers reporting a batch of b requests come from k / b batches of b
        "batches_formed": {str(b): round(k / b, 2) for b, k in sorted(sizes.items()) if b},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--model", default=None)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--timeout-s", type=float, default=300.0)
    args = p.parse_args(argv)
    body = {"seconds": args.seconds, **({"model": args.model} if args.model else {})}
    report = asyncio.run(run(args.url, args.n, args.concurrency, body, args.timeout_s))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
