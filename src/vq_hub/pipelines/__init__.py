from .autoregressive import VQAutoregressivePipeline
from .discrete_diffusion import VQDiscreteDiffusionPipeline, VQDiscreteDiffusionPipelineOutput
from .hierarchical import VQHierarchicalPipeline, VQHierarchicalPipelineOutput
from .pipeline_vq import VQPipeline, VQPipelineOutput
from .text_to_image_autoregressive import VQAutoregressiveTextToImagePipeline
from .text_to_image_discrete_diffusion import VQDiscreteDiffusionTextToImagePipeline

__all__ = [
    "VQAutoregressivePipeline",
    "VQAutoregressiveTextToImagePipeline",
    "VQDiscreteDiffusionPipeline",
    "VQDiscreteDiffusionPipelineOutput",
    "VQDiscreteDiffusionTextToImagePipeline",
    "VQHierarchicalPipeline",
    "VQHierarchicalPipelineOutput",
    "VQPipeline",
    "VQPipelineOutput",
]
