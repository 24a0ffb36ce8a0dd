"""Audio autoencoders as PyTorch modules: the EnCodec training objective and its residual quantizer, the
multi-scale STFT discriminator and EnCodec's adversarial losses."""

from .adversarial import AdversarialLoss, feature_matching_loss, hinge_discriminator_loss, hinge_generator_loss
from .discriminator import MultiScaleSTFTDiscriminator
from .rvq import EMAResidualVQ, EuclideanCodebook, RVQOutput, kmeans, nearest_code
from .training import CodecTrainingModel, mel_stft_loss

__all__ = ["AdversarialLoss", "CodecTrainingModel", "EMAResidualVQ", "EuclideanCodebook", "MultiScaleSTFTDiscriminator",
           "RVQOutput", "feature_matching_loss", "hinge_discriminator_loss", "hinge_generator_loss", "kmeans",
           "mel_stft_loss", "nearest_code"]
