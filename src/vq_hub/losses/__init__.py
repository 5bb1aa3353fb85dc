"""Training losses for VQ-VAE / VQ-GAN tokenizers (library code; the training loop lives in examples/)."""

from .gan import (
    GAN_LOSSES,
    adaptive_generator_weight,
    discriminator_loss,
    feature_matching_loss,
    generator_loss,
)
from .perceptual import LPIPSLoss, load_lpips
from .reconstruction import RECONSTRUCTION_LOSSES, reconstruction_loss
from .vqgan import VQGANLoss

__all__ = [
    "GAN_LOSSES",
    "LPIPSLoss",
    "RECONSTRUCTION_LOSSES",
    "VQGANLoss",
    "adaptive_generator_weight",
    "discriminator_loss",
    "feature_matching_loss",
    "generator_loss",
    "load_lpips",
    "reconstruction_loss",
]
