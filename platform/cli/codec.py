"""``arfm codec``: train, evaluate, normalize and inspect the autoencoders: the EnCodec codec (the latent of both
paradigms) and the VAE-GAN (a second latent for FM, ``--kind vae``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from arfm.cli.common import ConfigOpt, PresetOpt, SetOpt, fail, load_job

app = typer.Typer(help="Train, evaluate and inspect the autoencoders: the EnCodec codec (the latent space of both "
                       "paradigms) and the VAE-GAN (--kind vae, a second latent space for FM).",
                  no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="codec")


@app.command("train")
def train(
    config: ConfigOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
    local: Annotated[bool, typer.Option("--local", help="single-process PyTorch loop, no Ray Train")] = False,
    steps: Annotated[Optional[int], typer.Option(help="override codec.steps (vae.steps with --kind vae)")] = None,
    kind: Annotated[str, typer.Option("--kind", help="encodec: the RVQ codec (codec.*); vae: the VAE-GAN (vae.*)")]
    = "encodec",
) -> None:
    """Train a codec on random crops of data.dataset's train split and save it to codec.path (--kind vae: the
    VAE-GAN autoencoder of appendix E.3, driven by the vae.* fields and saved to vae.path).

    The codec's own fields drive the run: codec.steps, codec.batch_size, codec.lr, codec.time_budget_s
    (training stops at whichever of steps / budget comes first), codec.frame_rate (25|50|100 Hz at 32 kHz).
    At the end the latent normalization of appendix E.2 is computed and reconstruction metrics are printed.

    Examples:

      arfm codec train --preset tiny --local

      arfm codec train --preset tiny --set codec.time_budget_s=180 --set codec.path=runs/codec50

      arfm codec train --preset paper --set codec.frame_rate=25 --set train.workers=2

      arfm codec train --kind vae --preset tiny --set vae.time_budget_s=180 --set vae.path=runs/vae50
    """
    if kind not in ("encodec", "vae"):
        fail(f"--kind: {kind!r} is not an autoencoder kind; choose encodec or vae")
    section = "codec" if kind == "encodec" else "vae"
    overrides = list(set_ or [])
    if steps is not None:
        overrides.append(f"{section}.steps={steps}")
    cfg = load_job(config, preset, overrides)
    if not (Path(cfg.data.dataset) / "manifest.jsonl").is_file():
        fail(f"no dataset at data.dataset={cfg.data.dataset} (manifest.jsonl missing): create one with "
             "`arfm data synth` or `arfm data ingest`, or pass --set data.dataset=DIR")
    from arfm.train.task import get_task

    task = get_task("codec" if kind == "encodec" else "vae")
    job = task.job_config(cfg)
    if not local:
        try:
            from arfm.train.trainer import run_training
        except ModuleNotFoundError as exc:
            if exc.name != "arfm.train.trainer":
                raise
            fail("the distributed trainer (arfm.train.trainer) is not available in this checkout; "
                 "rerun with --local for the single-process loop")
        result = run_training(job, task)
        typer.echo(json.dumps({k: result[k] for k in ("run_id", "model_dir", "final_step", "wall_s")
                               if k in result}, indent=1, default=str))
        typer.echo(f"{kind} saved to {task.target(cfg)}")
        return
    from arfm.train.local import train_local

    model = train_local(job, task, log=lambda s: typer.echo(s, err=True))
    out = task.target(cfg)
    out.mkdir(parents=True, exist_ok=True)
    metrics = task.finalize(job, model, out)
    typer.echo(json.dumps(metrics, indent=1))
    typer.echo(f"{kind} saved to {out}")


@app.command("eval")
def evaluate(
    codec: Annotated[str, typer.Option("--codec", help="codec or VAE directory, or a codec hub id")],
    dataset: Annotated[str, typer.Option("--dataset", help="dataset folder with manifest.jsonl")],
    split: Annotated[str, typer.Option(help="train | valid")] = "valid",
    max_clips: Annotated[int, typer.Option(help="clips evaluated (the first ones of the split)")] = 32,
    seconds: Annotated[Optional[float], typer.Option(help="clip length (default: shortest clip, <= 10 s)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="write the full report (per clip) as JSON here")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu | cuda (default: cuda when available)")] = None,
) -> None:
    """Reconstruction quality of appendix B: SI-SNR (dB, higher is better) and log-MSD (lower is better), for
    decode(latent) (the continuous path FM uses) and decode(tokens) (the AR path).

    Examples:

      arfm codec eval --codec runs/codec --dataset runs/data/synth

      arfm codec eval --codec runs/codec --dataset runs/data/synth --out runs/codec/eval.json
    """
    import torch

    from arfm.evaluate.reconstruction import evaluate_codec
    from arfm.latents import CodecUnavailableError, load_latent
    from arfm.vae_latent import VAEUnavailableError

    try:
        c = load_latent(codec, device=device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except (CodecUnavailableError, VAEUnavailableError) as exc:
        fail(str(exc))
    try:
        report = evaluate_codec(c, dataset, split, max_clips=max_clips, seconds=seconds)
    except ValueError as exc:
        fail(str(exc))
    s = report["summary"]
    typer.echo(f"codec {report['codec']} ({c.frame_rate:g} Hz), {report['n_clips']} {split} clips of "
               f"{report['seconds']:g} s")
    typer.echo(f"{'path':<8} {'SI-SNR (dB)':>12} {'log-MSD':>9}")
    for path in ("latent", "tokens") if "si_snr_tokens" in s else ("latent",):
        typer.echo(f"{path:<8} {s[f'si_snr_{path}']:>12.3f} {s[f'log_msd_{path}']:>9.4f}")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1))
        typer.echo(f"report written to {out}")
    else:
        typer.echo(json.dumps(s))


@app.command("normalize")
def normalize(
    codec: Annotated[str, typer.Option("--codec", help="codec directory or hub id (e.g. facebook/encodec_32khz)")],
    out: Annotated[Path, typer.Option("--out", help="directory to save the codec with its statistics")],
    config: ConfigOpt = None,
    preset: PresetOpt = None,
    set_: SetOpt = None,
) -> None:
    """Compute the appendix E.2 latent normalization of a codec (e.g. a pretrained one) over
    codec.norm_segments random data.segment_seconds crops of data.dataset's train split, and save it to --out.

    Example:

      arfm codec normalize --codec ~/encodec_32khz --out runs/encodec32k --set data.dataset=runs/data/synth
    """
    from arfm.latents import Codec, CodecUnavailableError, compute_normalization
    from arfm.train.tasks.codec import random_crops

    cfg = load_job(config, preset, set_)
    try:
        c = Codec.load(codec)
    except CodecUnavailableError as exc:
        fail(str(exc))
    mean, mean_std = compute_normalization(
        c, random_crops(cfg, cfg.data.segment_seconds, cfg.codec.norm_segments, seed=cfg.data.seed + 1),
        cfg.codec.norm_segments, segment_seconds=cfg.data.segment_seconds)
    c.save(out)
    typer.echo(json.dumps({"mean": mean, "mean_std": mean_std, "identity": c.identity, "saved": str(out)}))


@app.command("info")
def info(name_or_path: Annotated[str, typer.Argument(help="codec or VAE directory, or a codec hub id")]) -> None:
    """Print a codec's (or a VAE's) configuration, identity and normalization statistics as JSON.

    Example:

      arfm codec info runs/codec
    """
    from arfm.latents import CodecUnavailableError, load_latent
    from arfm.vae_latent import VAEUnavailableError

    try:
        c = load_latent(name_or_path)
    except (CodecUnavailableError, VAEUnavailableError) as exc:
        fail(str(exc))
    typer.echo(json.dumps(c.info(), indent=1))
