"""The quantizer family: every quantizer maps latents (B, C, H, W) to codes (B, H, W) and back."""

from .base import Quantizer, QuantizerOutput
from .fsq import FSQuantizer
from .gumbel import GumbelQuantizer
from .settings import QUANTIZER_TYPES, QuantizerSettings
from .vector import VectorQuantizer, kmeans, nearest_codes

__all__ = [
    "FSQuantizer",
    "GumbelQuantizer",
    "QUANTIZER_TYPES",
    "Quantizer",
    "QuantizerOutput",
    "QuantizerSettings",
    "VectorQuantizer",
    "kmeans",
    "nearest_codes",
]
