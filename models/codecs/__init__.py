"""Audio autoencoders as PyTorch modules: the EnCodec training objective and its residual quantizer."""

from .rvq import EMAResidualVQ, EuclideanCodebook, RVQOutput, kmeans, nearest_code
from .training import CodecTrainingModel, mel_stft_loss

__all__ = ["CodecTrainingModel", "EMAResidualVQ", "EuclideanCodebook", "RVQOutput", "kmeans", "mel_stft_loss",
           "nearest_code"]
