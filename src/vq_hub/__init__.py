"""vq_hub: discrete image tokenizers and the generative priors built on them, as Hugging Face citizens."""

__version__ = "0.1.0"

from .models import PatchDiscriminator, VQModel, VQModelOutput
from .quantizers import FSQuantizer, GumbelQuantizer, Quantizer, QuantizerOutput, VectorQuantizer

__all__ = [
    "FSQuantizer",
    "GumbelQuantizer",
    "PatchDiscriminator",
    "Quantizer",
    "QuantizerOutput",
    "VQModel",
    "VQModelOutput",
    "VectorQuantizer",
]
