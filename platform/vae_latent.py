"""The VAE-GAN latent behind the same interface as :class:`arfm.latents.Codec` (appendices B, E.2, E.3).

:class:`VAELatent` wraps an :class:`arfm.models.codecs.VAE` and offers what flow matching and the platform ask of
a latent space: ``encode_latent`` (the posterior mean, ``[B, T, D]``), ``decode_latent``, the E.2 normalization
(``normalize`` / ``unnormalize`` / ``set_normalization``; :func:`arfm.latents.compute_normalization` works on it
unchanged), ``frame_rate``, ``hop_length``, ``n_frames``, ``identity``, ``save`` / ``load``. It has no tokens:
``quantize`` and ``encode_tokens`` raise, naming ``model.representation`` (the AR model needs EnCodec).

A VAE folder holds ``config.json`` (the constructor arguments), ``model.safetensors`` (the weights; safetensors,
so loading runs no code) and ``arfm_vae.json`` (frame rate, normalization statistics, identity).
:func:`arfm.latents.load_latent` opens either kind of folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from arfm.latents import LatentSpace

VAE_META = "arfm_vae.json"
VAE_CONFIG = "config.json"
VAE_WEIGHTS = "model.safetensors"
KIND = "arfm-vae"


class VAEUnavailableError(RuntimeError):
    """A VAE folder is missing or unreadable; the message says what to do."""


class VAELatent(LatentSpace):
    """Inference API over one trained VAE, the same attributes and methods as :class:`arfm.latents.Codec` minus
    the tokens (both are :class:`arfm.latents.LatentSpace`). Methods take and return torch tensors on the VAE's
    device and run without gradients."""

    kind = "vae"
    n_codebooks = 0
    codebook_size = 0

    def __init__(self, model: torch.nn.Module, *, mean: float = 0.0, mean_std: float = 1.0,
                 has_normalization: bool = False, source: str | None = None, norm_info: dict | None = None):
        self.model = model.eval()
        self.sample_rate = int(model.sample_rate)
        self.hop_length = int(model.hop_length)
        self.frame_rate = self.sample_rate / self.hop_length
        self.latent_dim = int(model.latent_dim)
        self.mean, self.mean_std = float(mean), float(mean_std)
        self.has_normalization = bool(has_normalization)
        self.norm_info = dict(norm_info or {})
        self.source = source
        self._digest: str | None = None

    # ------------------------------------------------------------------ construction
    @staticmethod
    def model_args(vae_cfg: Any, sample_rate: int) -> dict[str, Any]:
        from arfm.models.codecs import vae_strides

        return {"strides": list(vae_strides(vae_cfg.frame_rate, sample_rate)), "channels": list(vae_cfg.channels),
                "latent_dim": int(vae_cfg.latent_dim), "sample_rate": int(sample_rate)}

    @classmethod
    def build(cls, args: dict[str, Any]) -> torch.nn.Module:
        from arfm.models.codecs import VAE

        return VAE(strides=tuple(args["strides"]), channels=tuple(args["channels"]),
                   latent_dim=int(args["latent_dim"]), sample_rate=int(args["sample_rate"]))

    @classmethod
    def from_config(cls, vae_cfg: Any, sample_rate: int = 32000, seed: int | None = 0) -> "VAELatent":
        """An untrained VAE of the given :class:`arfm.config.VAEConfig`, seeded without touching the global RNG."""
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            model = cls.build(cls.model_args(vae_cfg, sample_rate))
        return cls(model, source="untrained")

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device | None = None) -> "VAELatent":
        from safetensors.torch import load_file

        p = Path(path).expanduser()
        if not (p / VAE_CONFIG).is_file() or not (p / VAE_WEIGHTS).is_file():
            raise VAEUnavailableError(f"{p}: not a VAE folder ({VAE_CONFIG} and {VAE_WEIGHTS} are needed); train "
                                      "one with `arfm codec train --kind vae` (it writes vae.path)")
        args = json.loads((p / VAE_CONFIG).read_text())
        if args.pop("kind", None) != KIND:
            raise VAEUnavailableError(f"{p / VAE_CONFIG}: not an arfm VAE config (kind != {KIND!r})")
        model = cls.build(args)
        try:
            model.load_state_dict(load_file(str(p / VAE_WEIGHTS)))
        except (RuntimeError, OSError) as exc:
            raise VAEUnavailableError(f"{p / VAE_WEIGHTS}: the weights do not fit the config ({str(exc)[:300]})") \
                from None
        meta = json.loads((p / VAE_META).read_text()) if (p / VAE_META).is_file() else {}
        norm = meta.get("normalization") or {}
        vae = cls(model, mean=norm.get("mean", 0.0), mean_std=norm.get("mean_std", 1.0),
                  has_normalization=bool(norm), source=str(p), norm_info=norm)
        if meta.get("weights_sha256"):
            vae._digest = meta["weights_sha256"]
        return vae.to(device) if device is not None else vae

    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        from arfm.models.codecs import VAE

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        m: VAE = self.model
        args = {"kind": KIND, "strides": list(m.strides), "channels": list(m.channels),
                "latent_dim": self.latent_dim, "sample_rate": self.sample_rate}
        (out / VAE_CONFIG).write_text(json.dumps(args, indent=2) + "\n")
        save_file({k: v.detach().cpu().contiguous() for k, v in m.state_dict().items()}, str(out / VAE_WEIGHTS))
        meta = {"format": 1, "kind": "vae", "identity": self.identity, "weights_sha256": self.weights_digest,
                "sample_rate": self.sample_rate, "frame_rate": self.frame_rate, "hop_length": self.hop_length,
                "latent_dim": self.latent_dim, "source": self.source,
                "normalization": self.normalization_info()}
        (out / VAE_META).write_text(json.dumps(meta, indent=2) + "\n")
        return out

    def info(self) -> dict[str, Any]:
        return {"kind": "vae", "identity": self.identity, "source": self.source, "sample_rate": self.sample_rate,
                "frame_rate": self.frame_rate, "hop_length": self.hop_length, "latent_dim": self.latent_dim,
                "strides": list(self.model.strides), "channels": list(self.model.channels),
                "parameters": sum(p.numel() for p in self.model.parameters()),
                "normalization": self.normalization_info()}

    # ------------------------------------------------------------------ encode / decode
    @torch.no_grad()
    def encode_latent(self, audio: torch.Tensor) -> torch.Tensor:
        """audio ``[B,1,S]`` -> the posterior mean ``[B, T, D]`` (not normalized), T = ceil(S / hop)."""
        return self.model.encode_latent(self._audio(audio), sample=False).transpose(1, 2).contiguous()

    @torch.no_grad()
    def decode_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """latent ``[B,T,D]`` (un-normalized) -> audio ``[B, 1, T * hop]``."""
        return self.model.decode(latent.to(self.device, torch.float32).transpose(1, 2))

    def quantize(self, latent: torch.Tensor) -> torch.Tensor:
        raise ValueError("the VAE latent is continuous and has no RVQ tokens: the AR model and the drum control "
                         "need EnCodec (model.representation=encodec)")

    encode_tokens = decode_tokens = dequantize = quantize
