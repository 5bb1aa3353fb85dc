from .discriminator import PatchDiscriminator
from .hierarchical_vq_model import HierarchicalVQModel, HierarchicalVQModelOutput
from .llamagen import LlamaGenConfig, LlamaGenForCausalLM
from .magvit_v2 import MagvitV2Tokenizer
from .tokenizer_utils import load_tokenizer
from .vq_model import VQVAEModel, VQVAEModelOutput

__all__ = [
    "HierarchicalVQModel",
    "HierarchicalVQModelOutput",
    "LlamaGenConfig",
    "LlamaGenForCausalLM",
    "MagvitV2Tokenizer",
    "PatchDiscriminator",
    "VQVAEModel",
    "VQVAEModelOutput",
    "load_tokenizer",
]
