from .autoregressive import VQAutoregressivePipeline
from .discrete_diffusion import VQDiscreteDiffusionPipeline, VQDiscreteDiffusionPipelineOutput
from .pipeline_vq import VQPipeline, VQPipelineOutput

__all__ = [
    "VQAutoregressivePipeline",
    "VQDiscreteDiffusionPipeline",
    "VQDiscreteDiffusionPipelineOutput",
    "VQPipeline",
    "VQPipelineOutput",
]
