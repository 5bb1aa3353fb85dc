from .vq_model import VQModel, VQModelOutput

__all__ = ["VQModel", "VQModelOutput"]
