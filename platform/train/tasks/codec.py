"""The codec training task: an EnCodec autoencoder trained on random crops of the dataset's train split.

The trainer (or :func:`arfm.train.local.train_local`) runs it with the ``train`` section produced by
:meth:`CodecTask.job_config`, which copies the codec's own optimisation fields (``codec.steps``,
``codec.batch_size``, ``codec.lr``, ``codec.time_budget_s``) into ``train`` and uses audiocraft's EnCodec
optimiser settings (Adam betas 0.5/0.9, no weight decay, constant learning rate unless ``codec.schedule=cosine``).

The final artifact is a :class:`arfm.latents.Codec` directory (hub format + ``arfm_codec.json``) holding the
latent normalization of appendix E.2, written to the trainer's ``out_dir`` and to ``codec.path``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from arfm.config import JobConfig


# ------------------------------------------------------------------------------------------- data helpers
def _clips(cfg: "JobConfig", split: str) -> list[dict[str, Any]]:
    """``[{"path": absolute wav path, "frames": int}]`` for a split of ``cfg.data.dataset``."""
    from arfm.data.manifest import read_manifest

    root = Path(cfg.data.dataset)
    rows = read_manifest(root, split)
    if not rows:
        raise ValueError(f"{root}: the manifest has no {split!r} clips; create data with `arfm data synth`")
    out = []
    for r in rows:
        if int(r.get("sample_rate", cfg.data.sample_rate)) != cfg.data.sample_rate:
            raise ValueError(f"{r['path']}: {r['sample_rate']} Hz but data.sample_rate={cfg.data.sample_rate}")
        out.append({"id": str(r["id"]), "path": str((root / r["path"]).resolve()),
                    "frames": int(round(float(r["seconds"]) * cfg.data.sample_rate))})
    return out


def read_crop(path: str, frames: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``n``-sample mono crop of a WAV file of ``frames`` samples (zero-padded when shorter)."""
    import soundfile as sf

    start = int(rng.integers(0, frames - n + 1)) if frames > n else 0
    audio, _ = sf.read(path, start=start, frames=n, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if len(audio) < n:
        audio = np.pad(audio, (0, n - len(audio)))
    return audio.astype(np.float32)


def random_crops(cfg: "JobConfig", seconds: float, n: int, split: str = "train", seed: int = 0) -> Iterator[np.ndarray]:
    """``n`` random crops of ``seconds`` from random clips of a split (reproducible for a seed)."""
    clips = _clips(cfg, split)
    rng = np.random.default_rng(seed)
    length = int(round(seconds * cfg.data.sample_rate))
    for _ in range(n):
        c = clips[int(rng.integers(len(clips)))]
        yield read_crop(c["path"], c["frames"], length, rng)


def _crop(audio: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``n``-sample crop of an in-memory clip (zero-padded when shorter), as :func:`read_crop`."""
    start = int(rng.integers(0, len(audio) - n + 1)) if len(audio) > n else 0
    out = audio[start:start + n]
    return np.pad(out, (0, n - len(out))) if len(out) < n else out


class _ReadClip:
    """Ray ``map`` callable: a clip row -> ``{"id", "audio": float32[whole clip], mono}``."""

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        import soundfile as sf

        audio, _ = sf.read(row["path"], dtype="float32", always_2d=True)
        return {"id": row["id"], "audio": audio.mean(axis=1).astype(np.float32)}


class CropEpochs:
    """Memory-mode epochs of the codec: each epoch ``crops`` fresh random crops of every cached clip, shuffled;
    batch ``b`` of epoch ``e`` is drawn from ``(seed, e, rank, b)``, so a resumed run repeats it exactly."""

    def __init__(self, clips: list[np.ndarray], n: int, crops: int, micro: int, seed: int, rank: int):
        self.clips = [np.asarray(c, np.float32) for c in clips]
        self.n, self.crops, self.micro, self.seed, self.rank = n, crops, micro, seed, rank
        self.n_batches = (len(self.clips) * crops) // micro
        self._order: tuple[int, np.ndarray] | None = None

    def batch(self, epoch: int, pos: int) -> dict[str, Any]:
        import torch

        from arfm.train.data import epoch_rng

        if self._order is None or self._order[0] != epoch:
            examples = np.repeat(np.arange(len(self.clips)), self.crops)
            self._order = (epoch, examples[epoch_rng(self.seed, epoch, self.rank).permutation(len(examples))])
        clip_idx = self._order[1][pos * self.micro:(pos + 1) * self.micro]
        rng = epoch_rng(self.seed, epoch, self.rank, pos)
        audio = np.stack([_crop(self.clips[i], self.n, rng) for i in clip_idx])
        return {"audio": torch.from_numpy(audio)[:, None, :]}


class _CropRows:
    """Ray ``flat_map`` callable: one clip row -> ``crops`` rows ``{"audio": float32[S]}`` at random offsets."""

    def __init__(self, n: int, crops_per_clip: int):
        self.n, self.crops = n, crops_per_clip

    def __call__(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        rng = np.random.default_rng()  # fresh entropy: new crops every epoch (the dataset is re-executed)
        return [{"audio": read_crop(row["path"], int(row["frames"]), self.n, rng)} for _ in range(self.crops)]


def adversarial_kwargs(section: Any, seed: int) -> dict[str, Any]:
    """The adversarial stage of an autoencoder section (``codec`` or ``vae``): a seeded multi-scale STFT
    discriminator wrapped in :class:`arfm.models.codecs.AdversarialLoss`, and its two weights; ``{}`` when
    ``adversarial`` is off. The discriminator is a submodule of the training model, so the one optimizer (its own
    Adam moments per parameter) and every checkpoint hold it beside the autoencoder."""
    if not section.adversarial:
        return {}
    import torch

    from arfm.models.codecs import AdversarialLoss, MultiScaleSTFTDiscriminator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        disc = MultiScaleSTFTDiscriminator(filters=section.disc_filters)
    return {"adversarial": AdversarialLoss(disc), "adv_weight": section.adv_weight,
            "feat_weight": section.feat_weight}


# ------------------------------------------------------------------------------------------------ the task
class CodecTask:
    """Implements :class:`arfm.train.task.Task` for ``arfm codec train``."""

    def __init__(self, name: str = "codec"):
        self.name = name

    def section(self, cfg: "JobConfig"):
        """The config section holding this autoencoder's fields (``codec``; ``vae`` for the VAE task)."""
        return cfg.codec

    # -- configuration ------------------------------------------------------------------------------------
    def job_config(self, cfg: "JobConfig") -> "JobConfig":
        """``cfg`` with the codec's optimisation fields copied into ``train`` (what the training loop reads)."""
        c = self.section(cfg)
        train = cfg.train.model_copy(update={
            "steps": c.steps, "batch_size": c.batch_size, "lr": c.lr, "time_budget_s": c.time_budget_s,
            "warmup_steps": 0, "schedule": c.schedule, "betas": (0.5, 0.9), "weight_decay": 0.0,
            "ema_decay": None,
        })
        return cfg.model_copy(update={"train": train})

    def tags(self, cfg: "JobConfig") -> dict[str, str]:
        return {"paradigm": "codec", "latent": "encodec", "representation": "encodec",
                "frame_rate": str(cfg.codec.frame_rate), "codec_pretrained": str(cfg.codec.pretrained or ""),
                "adversarial": str(cfg.codec.adversarial).lower()}

    # -- model --------------------------------------------------------------------------------------------
    def build_model(self, cfg: "JobConfig") -> "torch.nn.Module":
        from arfm.latents import Codec
        from arfm.models.codecs import CodecTrainingModel

        c = cfg.codec
        if c.pretrained:  # fine-tune released weights (their codebooks are already initialised)
            codec = Codec.load(c.pretrained)
        else:
            codec = Codec.from_config(c, cfg.data.sample_rate, seed=cfg.train.seed)
        model = CodecTrainingModel(
            codec.model, codec.sample_rate, commitment_weight=c.commitment_weight, l1_weight=c.l1_weight,
            mel_weight=c.mel_weight,
            quantizer_dropout=c.quantizer_dropout, passthrough_prob=c.passthrough_prob, ema_decay=c.ema_decay,
            **adversarial_kwargs(c, cfg.train.seed),
        )
        return model.train()

    # -- data ---------------------------------------------------------------------------------------------
    def _crop_geometry(self, cfg: "JobConfig") -> tuple[list[dict[str, Any]], int, int]:
        clips = _clips(cfg, "train")
        n = int(round(self.section(cfg).train_seconds * cfg.data.sample_rate))
        mean_frames = float(np.mean([c["frames"] for c in clips]))
        return clips, n, max(1, math.ceil(mean_frames / n))

    def train_bytes(self, cfg: "JobConfig") -> int:
        return 4 * sum(c["frames"] for c in _clips(cfg, "train"))

    def train_dataset(self, cfg: "JobConfig", mode: str = "stream"):
        """``memory``: one row per train clip, ``{"id", "audio": float32[whole clip]}`` (cropped per epoch by
        :meth:`memory_epochs`). ``stream``: rows ``{"audio": float32[train_seconds * sr]}``, ``ceil(clip /
        train_seconds)`` random crops of each train clip per epoch (the dataset is re-executed every epoch, so
        the offsets are new each time)."""
        import ray.data

        clips, n, crops = self._crop_geometry(cfg)
        ds = ray.data.from_items(clips, override_num_blocks=max(1, min(len(clips), 16)))
        if mode == "memory":
            return ds.map(_ReadClip())
        return ds.flat_map(_CropRows(n, crops))

    def valid_dataset(self, cfg: "JobConfig"):
        import ray.data

        try:
            clips = _clips(cfg, "valid")
        except ValueError:
            return None
        return ray.data.from_items(clips, override_num_blocks=max(1, min(len(clips), 8))).map(_ReadClip())

    def memory_epochs(self, cfg: "JobConfig", cols: dict[str, np.ndarray], micro: int, seed: int, rank: int):
        _, n, crops = self._crop_geometry(cfg)
        return CropEpochs(list(cols["audio"]), n, crops, micro, seed, rank)

    def valid_batches(self, cfg: "JobConfig", cols: dict[str, np.ndarray], batch: int) -> list[dict[str, Any]]:
        """Fixed crops of the validation clips (4 per clip at offsets drawn once from seed 0): the same
        examples at every validation."""
        _, n, _ = self._crop_geometry(cfg)
        rng = np.random.default_rng(0)
        crops = [_crop(np.asarray(a, np.float32), n, rng) for a in cols["audio"] for _ in range(4)]
        return [self.collate(cfg, {"audio": np.stack(crops[i:i + batch])}) for i in range(0, len(crops), batch)]

    def read_rows(self, cfg: "JobConfig", split: str) -> dict[str, np.ndarray]:
        """The whole clips of a split without Ray, ``{"id", "audio"}`` (for the plain loop's memory mode)."""
        clips = _clips(cfg, split)
        read = _ReadClip()
        rows = [read(c) for c in sorted(clips, key=lambda c: c["id"])]
        audio = np.empty(len(rows), dtype=object)
        audio[:] = [r["audio"] for r in rows]
        return {"id": np.array([r["id"] for r in rows], dtype=object), "audio": audio}

    def collate(self, cfg: "JobConfig", batch: dict[str, np.ndarray]) -> dict[str, Any]:
        import torch

        audio = np.stack(list(batch["audio"])).astype(np.float32, copy=False)
        return {"audio": torch.from_numpy(audio)[:, None, :]}

    # -- artifact -----------------------------------------------------------------------------------------
    def wrap(self, cfg: "JobConfig", autoencoder: "torch.nn.Module"):
        """The trained autoencoder as the platform's latent interface (:class:`arfm.latents.Codec` here)."""
        from arfm.latents import Codec

        return Codec(autoencoder, source=f"arfm codec train ({cfg.name})")

    def target(self, cfg: "JobConfig") -> Path:
        return Path(cfg.codec.path)

    def finalize(self, cfg: "JobConfig", model: "torch.nn.Module", out_dir: Path) -> dict[str, float]:
        """Compute the E.2 normalization over ``norm_segments`` random ``data.segment_seconds`` crops, save the
        autoencoder to ``out_dir`` and to its ``path`` (``codec.path`` / ``vae.path``), and return validation
        reconstruction metrics (appendix B)."""
        import copy

        import torch

        from arfm.config import dump_yaml
        from arfm.evaluate.reconstruction import evaluate_codec
        from arfm.latents import compute_normalization

        t0 = time.time()
        autoencoder = copy.deepcopy(getattr(model, "autoencoder", model)).to("cpu").float().eval()
        latent = self.wrap(cfg, autoencoder)
        if torch.cuda.is_available() and cfg.train.use_gpu:
            latent.to("cuda")
        seconds = cfg.data.segment_seconds
        n_norm = self.section(cfg).norm_segments
        mean, mean_std = compute_normalization(
            latent, random_crops(cfg, seconds, n_norm, seed=cfg.data.seed + 1), n_norm, segment_seconds=seconds)
        out_dir = Path(out_dir)
        metrics: dict[str, float] = {"norm_mean": mean, "norm_mean_std": mean_std}
        try:
            report = evaluate_codec(latent, cfg.data.dataset, "valid", max_clips=16,
                                    seconds=min(seconds, 10.0))
        except ValueError as exc:  # no valid split: the autoencoder is still usable
            print(f"[arfm {self.name}] no reconstruction metrics: {exc}", flush=True)
            report = None
        latent.to("cpu").save(out_dir)
        (out_dir / "config.yaml").write_text(dump_yaml(cfg))
        if report is not None:
            metrics.update({f"recon_{k}": v for k, v in report["summary"].items()})
            metrics["recon_n_clips"] = float(report["n_clips"])
            (out_dir / "reconstruction.json").write_text(json.dumps(report, indent=1))
        target = self.target(cfg)
        if target.resolve() != out_dir.resolve():
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(out_dir, target)
        metrics["finalize_s"] = time.time() - t0
        return metrics
