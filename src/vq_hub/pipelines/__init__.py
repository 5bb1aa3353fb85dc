from .autoregressive import VQAutoregressivePipeline
from .discrete_diffusion import VQDiffusionPipeline, VQDiffusionPipelineOutput
from .pipeline_vq import VQPipeline, VQPipelineOutput

__all__ = [
    "VQAutoregressivePipeline",
    "VQDiffusionPipeline",
    "VQDiffusionPipelineOutput",
    "VQPipeline",
    "VQPipelineOutput",
]
