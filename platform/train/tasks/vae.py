"""The VAE training task (``arfm codec train --kind vae``): the VAE-GAN autoencoder of appendix E.3, trained on
random crops of the dataset's train split by the same trainer, data path and checkpoints as the EnCodec codec.

Only what differs from :class:`~arfm.train.tasks.codec.CodecTask` is here: the ``vae`` config section drives the
optimisation (``vae.steps``, ``vae.batch_size``, ``vae.lr``, ``vae.time_budget_s``, ``vae.train_seconds``), the
model is :class:`arfm.models.codecs.VAETrainingModel` (multi-resolution STFT + L1 + KL weighted ``vae.kl_weight``
+ the shared adversarial stage when ``vae.adversarial``), and the artifact is a VAE folder
(:class:`arfm.vae_latent.VAELatent`) with its appendix E.2 normalization, written to ``vae.path``. Appendix E.1
trains it with AdamW; the codec's Adam betas (0.5, 0.9) and no weight decay are kept for both autoencoders here,
as the adversarial stage is the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from arfm.train.tasks.codec import CodecTask, adversarial_kwargs

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from arfm.config import JobConfig


class VAETask(CodecTask):
    def __init__(self, name: str = "vae"):
        super().__init__(name)

    def section(self, cfg: "JobConfig"):
        return cfg.vae

    def tags(self, cfg: "JobConfig") -> dict[str, str]:
        v = cfg.vae
        return {"paradigm": "codec", "latent": "vae", "representation": "vae", "frame_rate": str(v.frame_rate),
                "adversarial": str(v.adversarial).lower(), "kl_weight": f"{v.kl_weight:g}"}

    def build_model(self, cfg: "JobConfig") -> "torch.nn.Module":
        from arfm.models.codecs import VAETrainingModel
        from arfm.vae_latent import VAELatent

        v = cfg.vae
        vae = VAELatent.from_config(v, cfg.data.sample_rate, seed=cfg.train.seed)
        model = VAETrainingModel(vae.model, vae.sample_rate, kl_weight=v.kl_weight, l1_weight=v.l1_weight,
                                 stft_weight=v.stft_weight, stft_scale=v.stft_scale,
                                 **adversarial_kwargs(v, cfg.train.seed))
        return model.train()

    def wrap(self, cfg: "JobConfig", autoencoder: "torch.nn.Module") -> Any:
        from arfm.vae_latent import VAELatent

        return VAELatent(autoencoder, source=f"arfm codec train --kind vae ({cfg.name})")

    def target(self, cfg: "JobConfig") -> Path:
        return Path(cfg.vae.path)
