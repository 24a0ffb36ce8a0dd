"""``arfm data preprocess``: the dataset folder -> Parquet shards for training (registered by ``arfm.cli.data``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from arfm.cli.common import ConfigOpt, PresetOpt, SetOpt, fail, load_job


def register_preprocess(data_app: typer.Typer) -> None:
    """Add the ``preprocess`` command to the ``arfm data`` group."""

    @data_app.command("preprocess")
    def preprocess_cmd(
        dataset: Annotated[Optional[Path], typer.Option("--dataset", "-d", help="dataset folder with manifest.jsonl "
                                                        "(default: data.dataset)")] = None,
        codec: Annotated[Optional[str], typer.Option("--codec", help="codec directory or hub id (default: "
                                                     "codec.pretrained, else codec.path)")] = None,
        vae: Annotated[Optional[Path], typer.Option("--vae", help="also write this VAE's latents (a folder from `arfm "
                                                    "codec train --kind vae`, at the codec's frame rate) for "
                                                    "FM with model.representation=vae")] = None,
        out: Annotated[Optional[Path], typer.Option("--out", "-o", help="shard folder (default: data.shards)")] = None,
        workers: Annotated[Optional[int], typer.Option("--workers", "-w", min=1, help="encoder actors "
                                                       "(default: one per CPU of the Ray cluster)")] = None,
        clips_per_shard: Annotated[int, typer.Option("--clips-per-shard", min=1, help="clips per Parquet file "
                                                     "(part of the run's identity)")] = 32,
        encode_batch: Annotated[int, typer.Option("--encode-batch", min=1, help="segments per codec forward")] = 8,
        cpus_per_worker: Annotated[int, typer.Option("--cpus-per-worker", min=1)] = 1,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="delete existing shards in --out first")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
        config: ConfigOpt = None,
        preset: PresetOpt = None,
        set_: SetOpt = None,
    ) -> None:
        """Encode every segment once (tokens, normalized latents, controls, text features) into Parquet shards.

        Runs on a local Ray, or on the cluster named by RAY_ADDRESS (paths must then be on shared storage).
        Rerunning skips finished shards; after a crash or kill the rerun completes only the missing ones.

        Examples:
          arfm data preprocess --preset tiny --dataset runs/data/synth --codec runs/codec --out runs/shards
          arfm data preprocess --codec facebook/encodec_32khz --set text.encoder=t5 --out runs/shards-t5
          arfm data preprocess --preset tiny --set data.segment_seconds=2 --workers 2 --overwrite
          arfm data preprocess --preset tiny --codec runs/codec --vae runs/vae --out runs/shards
        """
        cfg = load_job(config, preset, set_)
        dataset_dir = Path(dataset or cfg.data.dataset)
        codec_src = codec or cfg.codec.pretrained or cfg.codec.path
        out_dir = Path(out or cfg.data.shards)
        if not (dataset_dir / "manifest.jsonl").is_file():
            fail(f"{dataset_dir}: no manifest.jsonl; create a dataset with `arfm data synth` or `arfm data ingest`")

        from arfm.data.preprocess import PreprocessError, preprocess
        from arfm.latents import CodecUnavailableError
        from arfm.text import TextEncoderError

        try:
            summary = preprocess(cfg, dataset_dir, codec_src, out_dir, vae=vae, workers=workers,
                                 clips_per_shard=clips_per_shard, encode_batch=encode_batch,
                                 cpus_per_worker=cpus_per_worker, overwrite=overwrite, progress=not quiet)
        except (PreprocessError, CodecUnavailableError, TextEncoderError) as exc:
            fail(str(exc))
        typer.echo(json.dumps({k: v for k, v in summary.items() if k != "meta"}, indent=2))
