"""vq_hub: discrete image tokenizers and the generative priors built on them, as Hugging Face citizens."""

__version__ = "0.1.0"

# diffusers' pipeline loader finds a component's load method through the base classes (ModelMixin, SchedulerMixin)
# it looks up on the library the component is recorded under — ["vq_hub", "VQModel"] needs them in this namespace.
from diffusers import ModelMixin, SchedulerMixin  # noqa: F401

from .models import PatchDiscriminator, VQModel, VQModelOutput
from .models.priors import CodeVocabulary, autoregressive_prior_config, denoiser_config
from .pipelines import (
    VQAutoregressivePipeline,
    VQDiffusionPipeline,
    VQDiffusionPipelineOutput,
    VQPipeline,
    VQPipelineOutput,
)
from .schedulers import DiscreteDiffusionScheduler
from .quantizers import FSQuantizer, GumbelQuantizer, Quantizer, QuantizerOutput, VectorQuantizer

__all__ = [
    "CodeVocabulary",
    "DiscreteDiffusionScheduler",
    "FSQuantizer",
    "GumbelQuantizer",
    "PatchDiscriminator",
    "Quantizer",
    "QuantizerOutput",
    "VQAutoregressivePipeline",
    "VQDiffusionPipeline",
    "VQDiffusionPipelineOutput",
    "VQModel",
    "VQModelOutput",
    "VQPipeline",
    "VQPipelineOutput",
    "VectorQuantizer",
    "autoregressive_prior_config",
    "denoiser_config",
]
