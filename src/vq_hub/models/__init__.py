from .discriminator import PatchDiscriminator
from .vq_model import VQModel, VQModelOutput

__all__ = ["PatchDiscriminator", "VQModel", "VQModelOutput"]
