from .autoregressive import VQAutoregressivePipeline
from .discrete_diffusion import VQDiscreteDiffusionPipeline, VQDiscreteDiffusionPipelineOutput
from .hierarchical import VQHierarchicalPipeline, VQHierarchicalPipelineOutput
from .pipeline_vq import VQPipeline, VQPipelineOutput
from .text_encoder_autoregressive import VQAutoregressiveTextEncoderPipeline
from .text_encoder_discrete_diffusion import VQDiscreteDiffusionTextEncoderPipeline
from .text_to_image_autoregressive import VQAutoregressiveTextToImagePipeline
from .text_to_image_discrete_diffusion import VQDiscreteDiffusionTextToImagePipeline

__all__ = [
    "VQAutoregressivePipeline",
    "VQAutoregressiveTextEncoderPipeline",
    "VQAutoregressiveTextToImagePipeline",
    "VQDiscreteDiffusionPipeline",
    "VQDiscreteDiffusionPipelineOutput",
    "VQDiscreteDiffusionTextEncoderPipeline",
    "VQDiscreteDiffusionTextToImagePipeline",
    "VQHierarchicalPipeline",
    "VQHierarchicalPipelineOutput",
    "VQPipeline",
    "VQPipelineOutput",
]
