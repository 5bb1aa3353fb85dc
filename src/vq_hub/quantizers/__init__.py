"""The quantizer family: every quantizer maps latents (B, C, H, W) to codes (B, H, W) and back
(a residual quantizer to `depth` codes per position, (B, depth, H, W))."""

from .base import Quantizer, QuantizerOutput
from .bsq import BinarySphericalQuantizer
from .fsq import FSQuantizer
from .gumbel import GumbelQuantizer
from .lfq import BinaryQuantizer, LookupFreeQuantizer
from .residual import ResidualQuantizer, ResidualQuantizerOutput
from .settings import QUANTIZER_TYPES, QuantizerSettings
from .simvq import SimVQuantizer
from .vector import VectorQuantizer, kmeans, nearest_codes

__all__ = [
    "BinaryQuantizer",
    "BinarySphericalQuantizer",
    "FSQuantizer",
    "GumbelQuantizer",
    "LookupFreeQuantizer",
    "QUANTIZER_TYPES",
    "Quantizer",
    "QuantizerOutput",
    "QuantizerSettings",
    "ResidualQuantizer",
    "ResidualQuantizerOutput",
    "SimVQuantizer",
    "VectorQuantizer",
    "kmeans",
    "nearest_codes",
]
