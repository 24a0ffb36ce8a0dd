"""``arfm serve`` (the Ray Serve application) and ``arfm bench`` (the inference benchmark of section 5.4).

Both import :mod:`arfm.serving` inside the command: the platform below it never imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from arfm.cli.common import SetOpt, fail


def serve(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="a ServeConfig YAML, or a Ray Serve "
                                                   "config file written by --write-config")] = None,
    model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="NAME=SOURCE: a saved-model folder, "
                                                       "runs:/RUN_ID/model, models:/NAME/VERSION or a run id "
                                                       "(repeatable)")] = None,
    random_init: Annotated[bool, typer.Option("--random-init", help="serve an untrained AR and FM model of "
                                              "--preset (smoke tests, the benchmark)")] = False,
    preset: Annotated[str, typer.Option("--preset", "-p", help="job preset of --random-init models")] = "tiny",
    set_: SetOpt = None,
    host: Annotated[Optional[str], typer.Option(help="bind address (default 127.0.0.1)")] = None,
    port: Annotated[Optional[int], typer.Option(help="HTTP port (default 8000)")] = None,
    max_batch_size: Annotated[Optional[int], typer.Option(help="@serve.batch max batch size")] = None,
    batch_wait_s: Annotated[Optional[float], typer.Option(help="@serve.batch wait for a batch to fill")] = None,
    replicas: Annotated[Optional[int], typer.Option(help="replicas of each model deployment")] = None,
    num_cpus: Annotated[Optional[float], typer.Option(help="CPUs reserved by each model replica")] = None,
    num_gpus: Annotated[Optional[float], typer.Option(help="GPUs reserved by each model replica")] = None,
    write_config: Annotated[Optional[Path], typer.Option("--write-config", help="write the Ray Serve config file "
                                                         "(for `serve run FILE` / `serve deploy FILE`) and exit")
                            ] = None,
) -> None:
    """Serve models over HTTP with Ray Serve: POST /v1/generate, POST /v1/inpaint, GET /v1/models, GET /healthz
    (OpenAPI at /docs). Binds 127.0.0.1 unless --host says otherwise.

    Examples:
      arfm serve --preset tiny --random-init                     # untrained tiny AR + FM, for smoke tests
      arfm serve -m ar=models:/arfm-ar/3 -m fm=runs:/0123abcd.../model --max-batch-size 32
      arfm serve --preset tiny --random-init --write-config serve.yaml && serve run serve.yaml
      arfm serve --config serve.yaml
    """
    import yaml

    from arfm.config import ConfigError
    from arfm.serving import config as sc

    try:
        if config is not None:
            if model or random_init:
                fail("give --config, or --model/--random-init, not both")
            cfg, overrides = sc.load(config)
        else:
            models = {}
            for item in model or []:
                name, eq, source = item.partition("=")
                if not eq or not name or not source:
                    fail(f"--model {item!r}: expected NAME=SOURCE, e.g. --model ar=models:/arfm-ar/1")
                models[name] = source
            cfg, overrides = sc.preset_config(preset, models, random_init, set_ or []), {}
        cfg = _apply_flags(cfg, host=host, port=port, max_batch_size=max_batch_size, batch_wait_s=batch_wait_s,
                           replicas=replicas, num_cpus=num_cpus, num_gpus=num_gpus)
    except ConfigError as exc:
        fail(str(exc))
        return
    if write_config is not None:
        write_config.write_text("# Ray Serve config file: `serve run` / `serve deploy` it, or `arfm serve --config` "
                                "it.\n# deployments: Ray Serve options of each deployment (they override args).\n"
                                + yaml.safe_dump(sc.serve_config_file(cfg), sort_keys=False))
        typer.echo(f"wrote {write_config}")
        return
    from arfm.serving.app import start

    url = f"http://{cfg.host}:{cfg.port}{cfg.route_prefix.rstrip('/')}"
    typer.echo(f"serving {', '.join(m.name for m in cfg.models)} at {url} (OpenAPI: {url}/docs); Ctrl-C stops")
    start(cfg, overrides, blocking=True)


def _apply_flags(cfg, **flags):
    from arfm.serving.config import validate

    data = cfg.model_dump(mode="json")
    for key in ("host", "port"):
        if flags[key] is not None:
            data[key] = flags[key]
    for m in data["models"]:
        if flags["max_batch_size"] is not None:
            m["batch"]["max_batch_size"] = flags["max_batch_size"]
        if flags["batch_wait_s"] is not None:
            m["batch"]["batch_wait_timeout_s"] = flags["batch_wait_s"]
        if flags["replicas"] is not None:
            m["num_replicas"] = flags["replicas"]
        for flag, key in (("num_cpus", "num_cpus"), ("num_gpus", "num_gpus")):
            if flags[flag] is not None:
                m["ray_actor_options"][key] = flags[flag]
    return validate(data)


def bench(
    preset: Annotated[str, typer.Option("--preset", "-p", help="benchmark size: tiny (CPU, minutes) | "
                                        "paper (GPU) | smoke (seconds; checks the benchmark runs)")] = "tiny",
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for bench.json and the PNG plots")] = Path(
        "runs/bench/inference"),
    device: Annotated[Optional[str], typer.Option(help="cpu or cuda (default: cuda when available)")] = None,
    only: Annotated[Optional[list[str]], typer.Option("--only", help="parts to run: ratios, figure5, figure6_7, "
                                                      "figure10, serve (repeatable; default all)")] = None,
    mlflow: Annotated[bool, typer.Option("--mlflow/--no-mlflow", help="log the results to MLflow")] = True,
) -> None:
    """The inference benchmark of section 5.4 (figures 5, 6, 7 and 10) on the bare models and through Serve.

    Writes OUT/bench.json, whose top level holds the five ratios measured side by side in this run
    (ar_vs_hf_musicgen_b1, ar_vs_hf_musicgen_b16, ar_step_vs_forward, fm_step_vs_forward, serve_vs_direct),
    and one PNG per figure; logs both to MLflow (experiment arfm-bench).

    Examples:
      arfm bench --preset tiny --out runs/bench/tiny
      arfm bench --preset paper --device cuda --out runs/bench/paper-gpu
      arfm bench --only ratios --out runs/bench/ratios
    """
    from arfm.serving.bench import PARTS, run

    bad = sorted(set(only or ()) - set(PARTS))
    if bad:
        fail(f"--only {bad}: choose from {', '.join(PARTS)}")
    try:
        report = run(preset, out, device=device, parts=only or PARTS, log_mlflow=mlflow)
    except ValueError as exc:
        fail(str(exc))
        return
    for key, value in report["ratios"].items():
        typer.echo(f"{key:24s} {value['value']:.3f}  (target {value['target']}: "
                   f"{'met' if value['met'] else 'MISSED'})")
    typer.echo(f"wrote {out / 'bench.json'}")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("bench")(bench)
