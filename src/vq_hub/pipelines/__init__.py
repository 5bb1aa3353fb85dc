from .autoregressive import VQAutoregressivePipeline
from .discrete_diffusion import VQDiscreteDiffusionPipeline, VQDiscreteDiffusionPipelineOutput
from .hierarchical import VQHierarchicalPipeline, VQHierarchicalPipelineOutput
from .pipeline_vq import VQPipeline, VQPipelineOutput

__all__ = [
    "VQAutoregressivePipeline",
    "VQDiscreteDiffusionPipeline",
    "VQDiscreteDiffusionPipelineOutput",
    "VQHierarchicalPipeline",
    "VQHierarchicalPipelineOutput",
    "VQPipeline",
    "VQPipelineOutput",
]
