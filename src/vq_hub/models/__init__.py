from .discriminator import PatchDiscriminator
from .vq_model import VQVAEModel, VQVAEModelOutput

__all__ = ["PatchDiscriminator", "VQVAEModel", "VQVAEModelOutput"]
