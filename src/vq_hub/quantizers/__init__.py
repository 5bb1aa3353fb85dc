"""The quantizer family: every quantizer maps latents (B, C, H, W) to codes (B, H, W) and back."""

from .base import Quantizer, QuantizerOutput
from .fsq import FSQuantizer
from .gumbel import GumbelQuantizer
from .vector import VectorQuantizer, kmeans, nearest_codes

__all__ = [
    "FSQuantizer",
    "GumbelQuantizer",
    "Quantizer",
    "QuantizerOutput",
    "VectorQuantizer",
    "kmeans",
    "nearest_codes",
]
