from .discriminator import PatchDiscriminator
from .hierarchical_vq_model import HierarchicalVQModel, HierarchicalVQModelOutput
from .llamagen import LlamaGenConfig, LlamaGenForCausalLM
from .tokenizer_utils import load_tokenizer
from .vq_model import VQVAEModel, VQVAEModelOutput

__all__ = [
    "HierarchicalVQModel",
    "HierarchicalVQModelOutput",
    "LlamaGenConfig",
    "LlamaGenForCausalLM",
    "PatchDiscriminator",
    "VQVAEModel",
    "VQVAEModelOutput",
    "load_tokenizer",
]
