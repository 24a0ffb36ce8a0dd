"""One latent space for both paradigms: an EnCodec autoencoder (sections 3.1, 4.2, appendices E.1-E.3).

:class:`Codec` wraps a ``transformers`` :class:`~transformers.EncodecModel`. The same weights give

* discrete RVQ tokens ``[B, K, T]`` for the auto-regressive model (``encode_tokens`` / ``decode_tokens``), and
* the continuous, pre-quantizer latent ``[B, T, D]`` for flow matching (``encode_latent`` / ``decode_latent``;
  appendix B: "EnCodec was sampled without quantization (pre-quantizer latent was passed to the decoder)"),
  normalized with one scalar mean and one scalar mean-std (appendix E.2, :func:`compute_normalization`).

A codec directory is a ``save_pretrained`` folder (``config.json`` + ``model.safetensors``, the hub format of
``facebook/encodec_32khz``) plus ``arfm_codec.json`` (frame rate, normalization statistics, identity). A hub id
and a local directory load through the one code path, :meth:`Codec.load`.

Paper configurations (appendix E.3, 32 kHz): strides [8,8,5,4] / [8,5,4,4] / [8,5,4,2] for 25 / 50 / 100 Hz,
channels [64, 128, 256, 512] (``num_filters=64`` doubled at each stride), GELU, latent dimension 128 and 4
residual codebooks of 2048 bins. ``transformers`` names the strides ``upsampling_ratios`` (decoder order; the
encoder uses them reversed). Two extensions of the ``transformers`` model, stored as plain ``config.json``
fields so the file stays in the hub format: ``activation`` ("elu" as in the released checkpoints, "gelu" as in
E.3) and ``num_lstm_layers = 0`` (no LSTM, for the tiny CPU preset).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import EncodecConfig, EncodecModel
from transformers.models.encodec.modeling_encodec import EncodecLSTM

CODEC_META = "arfm_codec.json"
PRETRAINED_32KHZ = "facebook/encodec_32khz"
# Appendix E.3 strides (decoder order) at 32 kHz, keyed by hop length = sample_rate / frame_rate.
STRIDES_BY_HOP: dict[int, list[int]] = {1280: [8, 8, 5, 4], 640: [8, 5, 4, 4], 320: [8, 5, 4, 2]}


class CodecUnavailableError(RuntimeError):
    """A codec named by hub id or path cannot be loaded (missing directory, offline hub, bad files)."""


def strides_for(sample_rate: int, frame_rate: float) -> list[int]:
    """The E.3 stride list whose product is the hop ``sample_rate / frame_rate`` (e.g. 50 Hz at 32 kHz -> 640)."""
    hop = sample_rate / frame_rate
    if hop != int(hop) or int(hop) not in STRIDES_BY_HOP:
        raise ValueError(
            f"codec.frame_rate={frame_rate} at data.sample_rate={sample_rate} needs a hop of {hop} samples; "
            f"the appendix E.3 strides give hops {sorted(STRIDES_BY_HOP)} (25/50/100 Hz at 32 kHz)"
        )
    return list(STRIDES_BY_HOP[int(hop)])


def encodec_config(codec_cfg: Any, sample_rate: int) -> EncodecConfig:
    """An :class:`EncodecConfig` for a :class:`arfm.config.CodecConfig` (appendix E.3 when at paper values).

    Non-causal convolutions, constant padding, identity skips, weight norm, compress 2 and one residual layer
    per stride follow audiocraft's EnCodec as released in ``facebook/encodec_32khz``.
    """
    ratios = strides_for(sample_rate, codec_cfg.frame_rate)
    hop = int(np.prod(ratios))
    frame_rate = sample_rate / hop
    if not math.log2(codec_cfg.codebook_size).is_integer():
        raise ValueError(f"codec.codebook_size must be a power of two (got {codec_cfg.codebook_size})")
    bits = int(math.log2(codec_cfg.codebook_size))
    # transformers derives the number of codebooks from the largest bandwidth (kbps).
    bandwidth = codec_cfg.n_codebooks * frame_rate * bits / 1000.0
    cfg = EncodecConfig(
        target_bandwidths=[bandwidth],
        sampling_rate=sample_rate,
        audio_channels=1,
        normalize=False,
        hidden_size=codec_cfg.latent_dim,
        num_filters=codec_cfg.base_channels,
        num_residual_layers=codec_cfg.residual_layers,
        upsampling_ratios=ratios,
        norm_type="weight_norm",
        use_causal_conv=False,
        pad_mode="constant",
        compress=2,
        num_lstm_layers=codec_cfg.lstm_layers,
        codebook_size=codec_cfg.codebook_size,
        use_conv_shortcut=False,
        activation=getattr(codec_cfg, "activation", "gelu"),
    )
    if cfg.num_quantizers != codec_cfg.n_codebooks:  # float rounding in 1000 * bw // (fr * bits)
        cfg.target_bandwidths = [bandwidth * (1 + 1e-6)]
    assert cfg.num_quantizers == codec_cfg.n_codebooks, (cfg.num_quantizers, codec_cfg.n_codebooks)
    return cfg


def _is_hub_id(name: str) -> bool:
    parts = name.split("/")
    return (0 < len(parts) <= 2 and all(parts) and not name.startswith((".", "~"))
            and all(c.isalnum() or c in "-_." for part in parts for c in part))


def _hub_offline(repo_id: str, timeout: float = 3.0) -> bool:
    """True when ``repo_id`` must come from the local cache (offline mode, or the hub does not answer)."""
    from arfm.hub import hub_reachable

    return not hub_reachable(timeout)


class ArfmEncodecModel(EncodecModel):
    """``transformers`` EnCodec plus two config switches: ``activation`` ("elu"|"gelu") and ``num_lstm_layers=0``.

    Loads every hub EnCodec checkpoint unchanged (they have neither field: ELU and their LSTM are kept).
    """

    def __init__(self, config: EncodecConfig):
        n_lstm = int(config.num_lstm_layers)
        if n_lstm == 0:  # nn.LSTM refuses 0 layers: build with one, then drop it.
            config.num_lstm_layers = 1
        try:
            super().__init__(config)
        finally:
            config.num_lstm_layers = n_lstm
        if n_lstm == 0:
            _replace(self, lambda m: isinstance(m, EncodecLSTM), nn.Identity)
        activation = getattr(config, "activation", "elu")
        if activation == "gelu":
            _replace(self, lambda m: isinstance(m, nn.ELU), nn.GELU)
        elif activation != "elu":
            raise ValueError(f"codec activation must be 'elu' or 'gelu' (got {activation!r})")


def _replace(root: nn.Module, match, make) -> None:
    for name, child in list(root.named_children()):
        if match(child):
            setattr(root, name, make())  # also right for nn.ModuleList / nn.Sequential (children keyed "0", "1", ...)
        else:
            _replace(child, match, make)


def state_digest(module: nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes, bytes): names the weights independent of the file."""
    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        t = value.detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class LatentSpace:
    """What the EnCodec codec and the VAE share as the platform's latent interface: identity from the weights and
    the normalization statistics, device, audio checks, the appendix E.2 normalization and frame arithmetic.
    A subclass sets ``model``, ``sample_rate``, ``hop_length``, ``mean``, ``mean_std``, ``has_normalization``,
    ``norm_info``, ``_digest`` and its identity prefix ``kind``."""

    kind = "latent"

    # ------------------------------------------------------------------ identity, device
    @property
    def weights_digest(self) -> str:
        if self._digest is None:
            self._digest = state_digest(self.model)
        return self._digest

    @property
    def identity(self) -> str:
        """``<kind>-<fr>hz-<12 hex>``: a digest of the weights and the normalization statistics."""
        h = hashlib.sha256(self.weights_digest.encode())
        h.update(f"{self.mean!r}|{self.mean_std!r}".encode() if self.has_normalization else b"unnormalized")
        return f"{self.kind}-{self.frame_rate:g}hz-{h.hexdigest()[:12]}"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device):
        self.model.to(device)
        return self

    def normalization_info(self) -> dict[str, Any] | None:
        """The stored statistics (``None`` before :func:`compute_normalization` or :meth:`set_normalization`)."""
        return {**self.norm_info, "mean": self.mean, "mean_std": self.mean_std} if self.has_normalization else None

    def _audio(self, audio: torch.Tensor) -> torch.Tensor:
        audio = torch.as_tensor(audio)
        if audio.dim() == 1:
            audio = audio[None, None]
        elif audio.dim() == 2:
            audio = audio[:, None]
        if audio.dim() != 3 or audio.shape[1] != 1:
            raise ValueError(f"audio must be [B, 1, S] mono (got shape {tuple(audio.shape)})")
        return audio.to(self.device, torch.float32)

    # ------------------------------------------------------------------ normalization (appendix E.2)
    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.mean) / self.mean_std

    def unnormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.mean_std + self.mean

    def set_normalization(self, mean: float, mean_std: float, **info: Any) -> None:
        if not (math.isfinite(mean) and math.isfinite(mean_std) and mean_std > 0):
            raise ValueError(f"invalid normalization statistics mean={mean}, mean_std={mean_std}")
        self.mean, self.mean_std, self.has_normalization = float(mean), float(mean_std), True
        self.norm_info = dict(info)

    def n_frames(self, seconds: float) -> int:
        """Latent frames for ``seconds`` of audio: ceil(samples / hop) = seconds * frame_rate (10 s @ 50 Hz: 500)."""
        return math.ceil(round(seconds * self.sample_rate) / self.hop_length)

    def n_samples(self, seconds: float) -> int:
        return int(round(seconds * self.sample_rate))


class Codec(LatentSpace):
    """Inference API over one EnCodec model (contract "Codec" in the shared interfaces).

    Attributes: ``sample_rate``, ``frame_rate``, ``hop_length``, ``n_codebooks``, ``codebook_size``,
    ``latent_dim``, ``identity``, ``mean``, ``mean_std`` and ``has_normalization`` (False until
    :func:`compute_normalization` ran or the stats were loaded). Methods take and return torch tensors on the
    codec's device and run without gradients.
    """

    kind = "encodec"

    def __init__(self, model: EncodecModel, *, mean: float = 0.0, mean_std: float = 1.0,
                 has_normalization: bool = False, source: str | None = None, norm_info: dict | None = None):
        cfg = model.config
        if cfg.normalize or cfg.chunk_length_s is not None or cfg.audio_channels != 1:
            raise ValueError(
                "only mono EnCodec models without chunking or input normalization are supported "
                "(e.g. facebook/encodec_32khz); got "
                f"normalize={cfg.normalize}, chunk_length_s={cfg.chunk_length_s}, channels={cfg.audio_channels}"
            )
        if cfg.codebook_dim != cfg.hidden_size:
            raise ValueError("codebook_dim must equal hidden_size (the quantizer works on the latent itself)")
        self.model = model.eval()
        self.sample_rate = int(cfg.sampling_rate)
        self.hop_length = int(np.prod(cfg.upsampling_ratios))
        self.frame_rate = self.sample_rate / self.hop_length
        self.n_codebooks = int(cfg.num_quantizers)
        self.codebook_size = int(cfg.codebook_size)
        self.latent_dim = int(cfg.hidden_size)
        self.mean = float(mean)
        self.mean_std = float(mean_std)
        self.has_normalization = bool(has_normalization)
        self.norm_info = dict(norm_info or {})
        self.source = source
        self._digest: str | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, codec_cfg: Any, sample_rate: int = 32000, seed: int | None = 0) -> "Codec":
        """An untrained codec of the given :class:`arfm.config.CodecConfig` (random codebooks, marked un-initialised
        so that training starts them with k-means)."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        with torch.random.fork_rng(devices=[], enabled=seed is not None):  # seeded init, global RNG untouched
            if seed is not None:
                torch.manual_seed(seed)
            model = ArfmEncodecModel(encodec_config(codec_cfg, sample_rate))
        for layer in model.quantizer.layers:
            cb = layer.codebook
            cb.embed.copy_(torch.randn(cb.embed.shape, generator=gen))
            cb.embed_avg.copy_(cb.embed)
            cb.cluster_size.fill_(1.0)
            cb.inited.fill_(0.0)
        return cls(model, source="untrained")

    @classmethod
    def load(cls, name_or_path: str | Path, *, device: str | torch.device | None = None,
             local_files_only: bool = False) -> "Codec":
        """Load a codec from a local directory or a hub id (e.g. ``facebook/encodec_32khz``), the same way.

        Raises :class:`CodecUnavailableError` naming what to do when it cannot be found or fetched.
        """
        from transformers.utils import cached_file

        name = str(name_or_path)
        local = Path(name).expanduser()
        if local.exists():
            if not (local / "config.json").is_file():
                raise CodecUnavailableError(
                    f"{local}: not a codec directory (no config.json). Train one with `arfm codec train` "
                    "or point codec.pretrained at a folder written by `huggingface-cli download`."
                )
            name = str(local)
        elif not _is_hub_id(name):
            raise CodecUnavailableError(
                f"no codec directory {name!r}. Train one with `arfm codec train` (it writes codec.path), or pass "
                f"a directory holding config.json + model.safetensors, or a hub id such as {PRETRAINED_32KHZ}."
            )
        else:
            local_files_only = local_files_only or _hub_offline(name)
        try:
            model = ArfmEncodecModel.from_pretrained(name, local_files_only=local_files_only)
            meta_file = cached_file(name, CODEC_META, local_files_only=local_files_only,
                                    _raise_exceptions_for_missing_entries=False,
                                    _raise_exceptions_for_connection_errors=False)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            where = ("the directory exists but does not hold a loadable EnCodec checkpoint"
                     if Path(name).exists() else
                     f"there is no local directory {name!r}, the hub id is not in the local Hugging Face cache "
                     "and the hub is not reachable from here (offline)")
            raise CodecUnavailableError(
                f"cannot load codec {name!r}: {where} ({first}).\n"
                f"Download it on a machine with internet with `huggingface-cli download {name} --local-dir DIR`, "
                "copy DIR here and pass codec.pretrained=DIR (or --codec DIR); or train a codec with "
                "`arfm codec train` and use codec.path."
            ) from None
        meta = json.loads(Path(meta_file).read_text()) if meta_file else {}
        norm = meta.get("normalization") or {}
        codec = cls(model, mean=norm.get("mean", 0.0), mean_std=norm.get("mean_std", 1.0),
                    has_normalization=bool(norm), source=name, norm_info=norm)
        if meta.get("weights_sha256"):
            codec._digest = meta["weights_sha256"]
        return codec.to(device) if device is not None else codec

    def save(self, directory: str | Path) -> Path:
        """``save_pretrained`` (hub format) + ``arfm_codec.json`` with frame rate, statistics and identity."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out)
        meta = {
            "format": 1,
            "identity": self.identity,
            "weights_sha256": self.weights_digest,
            "sample_rate": self.sample_rate,
            "frame_rate": self.frame_rate,
            "hop_length": self.hop_length,
            "n_codebooks": self.n_codebooks,
            "codebook_size": self.codebook_size,
            "latent_dim": self.latent_dim,
            "source": self.source,
            "normalization": self.normalization_info(),
        }
        (out / CODEC_META).write_text(json.dumps(meta, indent=2) + "\n")
        return out

    def info(self) -> dict[str, Any]:
        return {"identity": self.identity, "source": self.source, "sample_rate": self.sample_rate,
                "frame_rate": self.frame_rate, "hop_length": self.hop_length, "n_codebooks": self.n_codebooks,
                "codebook_size": self.codebook_size, "latent_dim": self.latent_dim,
                "activation": getattr(self.model.config, "activation", "elu"),
                "strides": list(self.model.config.upsampling_ratios),
                "channels": [self.model.config.num_filters * 2**i
                             for i in range(len(self.model.config.upsampling_ratios) + 1)],
                "lstm_layers": self.model.config.num_lstm_layers,
                "parameters": sum(p.numel() for p in self.model.parameters()),
                "normalization": self.normalization_info()}

    # ------------------------------------------------------------------ encode / decode
    @torch.no_grad()
    def encode_latent(self, audio: torch.Tensor) -> torch.Tensor:
        """audio ``[B,1,S]`` -> pre-quantizer latent ``[B, T, D]`` (not normalized), T = ceil(S / hop)."""
        return self.model.encoder(self._audio(audio)).transpose(1, 2).contiguous()

    @torch.no_grad()
    def quantize(self, latent: torch.Tensor) -> torch.Tensor:
        """latent ``[B,T,D]`` -> RVQ codes ``[B, K, T]`` (int64), nearest codeword of each residual in turn."""
        codes = self.model.quantizer.encode(latent.to(self.device, torch.float32).transpose(1, 2))
        return codes.transpose(0, 1).contiguous()

    @torch.no_grad()
    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """codes ``[B, K', T]`` (K' <= K: the first codebooks) -> quantized latent ``[B, T, D]``."""
        codes = codes.to(self.device, torch.long)
        if codes.shape[1] > self.n_codebooks:
            raise ValueError(f"codes have {codes.shape[1]} codebooks, the codec {self.n_codebooks}")
        return self.model.quantizer.decode(codes.transpose(0, 1)).transpose(1, 2).contiguous()

    @torch.no_grad()
    def encode_tokens(self, audio: torch.Tensor) -> torch.Tensor:
        """audio ``[B,1,S]`` -> codes ``[B, K, T]``."""
        return self.quantize(self.encode_latent(audio))

    @torch.no_grad()
    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """Continuous latent ``[B,T,D]`` (un-normalized) -> audio ``[B, 1, T * hop]``, no quantization."""
        return self.model.decoder(latent.to(self.device, torch.float32).transpose(1, 2))

    @torch.no_grad()
    def decode_tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """codes ``[B,K,T]`` -> audio ``[B, 1, T * hop]``."""
        return self.decode_latent(self.dequantize(codes))

def compute_normalization(codec: Codec, audio_iter: Iterable, n_segments: int, batch_size: int = 8,
                          segment_seconds: float | None = None) -> tuple[float, float]:
    """Appendix E.2: encode ``n_segments`` equal-length segments to M ``[N, T, D]`` and compute

    ``mean = M.mean()`` and ``mean_std = M.std(dim=1).mean()`` (std over time, unbiased, averaged over segments
    and dimensions). Streams: never holds M. Sets the statistics on ``codec`` and returns ``(mean, mean_std)``.
    ``audio_iter`` yields 1-D arrays/tensors of samples (or ``[1, S]``); it must yield at least ``n_segments``.
    """
    total = 0.0
    count = 0
    std_sum = 0.0
    std_count = 0
    seen = 0
    length = None

    def flush(buf: list[torch.Tensor]) -> None:
        nonlocal total, count, std_sum, std_count
        z = codec.encode_latent(torch.stack(buf)[:, None]).double()  # [b, T, D]
        total += z.sum().item()
        count += z.numel()
        s = z.std(dim=1)  # [b, D]
        std_sum += s.sum().item()
        std_count += s.numel()

    buf: list[torch.Tensor] = []
    for audio in audio_iter:
        if seen >= n_segments:
            break
        a = torch.as_tensor(np.asarray(audio, dtype=np.float32)).reshape(-1)
        if length is None:
            length = a.numel()
        if a.numel() != length:
            raise ValueError(f"normalization segments must have equal length ({a.numel()} != {length})")
        buf.append(a)
        seen += 1
        if len(buf) == batch_size:
            flush(buf)
            buf = []
    if buf:
        flush(buf)
    if seen < n_segments:
        raise ValueError(f"compute_normalization: asked for {n_segments} segments, the data gave {seen}")
    mean, mean_std = total / count, std_sum / std_count
    codec.set_normalization(mean, mean_std, n_segments=seen,
                            segment_seconds=segment_seconds if segment_seconds else length / codec.sample_rate)
    return mean, mean_std


def codec_from_job(codec_cfg: Any, device: str | torch.device | None = None) -> Codec:
    """The codec a job uses: ``codec.pretrained`` when set, else the trained one at ``codec.path``."""
    return Codec.load(codec_cfg.pretrained or codec_cfg.path, device=device)


def is_vae_dir(path: str | Path) -> bool:
    from arfm.vae_latent import VAE_CONFIG

    p = Path(str(path)).expanduser()
    if not (p / VAE_CONFIG).is_file():
        return False
    try:
        return json.loads((p / VAE_CONFIG).read_text()).get("kind") == "arfm-vae"
    except (OSError, ValueError):
        return False


def load_latent(name_or_path: str | Path, *, device: str | torch.device | None = None) -> Any:
    """The latent space stored at ``name_or_path``: a VAE folder (``arfm_vae.json``) as
    :class:`arfm.vae_latent.VAELatent`, anything else (EnCodec folder or hub id) as :class:`Codec`."""
    if is_vae_dir(name_or_path):
        from arfm.vae_latent import VAELatent

        return VAELatent.load(name_or_path, device=device)
    return Codec.load(name_or_path, device=device)
