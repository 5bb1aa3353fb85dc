"""Binary spherical quantization (BSQ-ViT, Zhao et al. 2024): LFQ on the unit sphere."""

import math

import torch
import torch.nn.functional as F

from .lfq import BinaryQuantizer


class BinarySphericalQuantizer(BinaryQuantizer):
    r"""
    Projects latents to `bits` channels, l2-normalises them onto the unit sphere and quantizes each channel to
    `±1/√bits` by its sign, so every code is itself a unit vector: the quantization error is bounded (at most
    `√(2 − 2/√bits)`) whatever the encoder outputs, which is why BSQ trains without LFQ's growing latents, and the
    soft-assignment entropies are well scaled at any bit count. Codes are the sign bits as an integer, as in LFQ; the
    losses are LFQ's (see [`~vq_hub.quantizers.lfq.BinaryQuantizer`]), measured on the normalised vectors.

    Args:
        entropy_temperature (`float`, *optional*): τ of the soft assignment; defaults to 1.0 (BSQ-ViT's inverse
            temperature of 1: a channel's logit is `4·u_i / (√bits · τ)`).
        Others: as [`~vq_hub.quantizers.lfq.BinaryQuantizer`].
    """

    default_entropy_temperature = 1.0

    @property
    def code_scale(self) -> float:
        return 1.0 / math.sqrt(self.bits)

    def prepare(self, vectors: torch.Tensor) -> torch.Tensor:
        return F.normalize(vectors, dim=1)
