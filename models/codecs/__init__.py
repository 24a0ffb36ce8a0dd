"""Audio autoencoders as PyTorch modules: the EnCodec training objective and its residual quantizer, the
multi-scale STFT discriminator and EnCodec's adversarial losses, and appendix E.3's VAE with its objective."""

from .adversarial import AdversarialLoss, feature_matching_loss, hinge_discriminator_loss, hinge_generator_loss
from .discriminator import MultiScaleSTFTDiscriminator
from .rvq import EMAResidualVQ, EuclideanCodebook, RVQOutput, kmeans, nearest_code
from .snake import Snake
from .training import CodecTrainingModel, mel_stft_loss
from .vae import VAE, VAE_STRIDES, kl_divergence, vae_strides
from .vae_training import VAETrainingModel

__all__ = ["AdversarialLoss", "CodecTrainingModel", "EMAResidualVQ", "EuclideanCodebook", "MultiScaleSTFTDiscriminator",
           "RVQOutput", "Snake", "VAE", "VAETrainingModel", "VAE_STRIDES", "feature_matching_loss",
           "hinge_discriminator_loss", "hinge_generator_loss", "kl_divergence", "kmeans", "mel_stft_loss",
           "nearest_code", "vae_strides"]
