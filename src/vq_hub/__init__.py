"""vq_hub: discrete image tokenizers and the generative priors built on them, as Hugging Face citizens."""

__version__ = "0.2.0"

import sys
import warnings
from pathlib import Path

# What each public name is imported from (the `vq-hub` command resolves them on first use, below).
_PUBLIC = {
    **{name: ("diffusers", name) for name in ("ModelMixin", "SchedulerMixin")},
    **{name: ("vq_hub.models", name) for name in ("HierarchicalVQModel", "HierarchicalVQModelOutput",
                                                  "PatchDiscriminator", "VQVAEModel", "VQVAEModelOutput",
                                                  "load_tokenizer")},
    **{name: ("vq_hub.models.priors", name) for name in ("CodeVocabulary", "autoregressive_prior_config",
                                                         "denoiser_config")},
    **{name: ("vq_hub.pipelines", name) for name in ("VQAutoregressivePipeline", "VQAutoregressiveTextToImagePipeline",
                                                     "VQDiscreteDiffusionPipeline", "VQDiscreteDiffusionPipelineOutput",
                                                     "VQDiscreteDiffusionTextToImagePipeline", "VQHierarchicalPipeline",
                                                     "VQHierarchicalPipelineOutput", "VQPipeline", "VQPipelineOutput")},
    "DiscreteDiffusionScheduler": ("vq_hub.schedulers", "DiscreteDiffusionScheduler"),
    **{name: ("vq_hub.quantizers", name) for name in ("BinarySphericalQuantizer", "FSQuantizer", "GumbelQuantizer",
                                                      "LookupFreeQuantizer", "Quantizer", "QuantizerOutput",
                                                      "ResidualQuantizer", "ResidualQuantizerOutput",
                                                      "SimVQuantizer", "VectorQuantizer")},
}  # fmt: skip


def _launched_as_command() -> bool:
    """Whether this process is the `vq-hub` console script: each subcommand then imports what it needs itself, so
    `vq-hub --help` and argument errors answer at once instead of after torch and diffusers load (~5 s)."""
    return bool(sys.argv) and Path(sys.argv[0] or "").stem in ("vq-hub", "vq-hub-script")


if not _launched_as_command():
    # diffusers' pipeline loader finds a component's load method through the base classes (ModelMixin,
    # SchedulerMixin) it looks up on the library the component is recorded under — ["vq_hub", "VQVAEModel"] needs
    # them in this namespace; importing the pipelines registers them with diffusers (`DiffusionPipeline` finds them).
    from diffusers import ModelMixin, SchedulerMixin  # noqa: F401

    from .models import (
        HierarchicalVQModel,
        HierarchicalVQModelOutput,
        PatchDiscriminator,
        VQVAEModel,
        VQVAEModelOutput,
        load_tokenizer,
    )
    from .models.priors import CodeVocabulary, autoregressive_prior_config, denoiser_config
    from .pipelines import (
        VQAutoregressivePipeline,
        VQAutoregressiveTextToImagePipeline,
        VQDiscreteDiffusionPipeline,
        VQDiscreteDiffusionPipelineOutput,
        VQDiscreteDiffusionTextToImagePipeline,
        VQHierarchicalPipeline,
        VQHierarchicalPipelineOutput,
        VQPipeline,
        VQPipelineOutput,
    )
    from .schedulers import DiscreteDiffusionScheduler
    from .quantizers import (
        BinarySphericalQuantizer, FSQuantizer, GumbelQuantizer, LookupFreeQuantizer, Quantizer, QuantizerOutput,
        ResidualQuantizer, ResidualQuantizerOutput, SimVQuantizer, VectorQuantizer,
    )  # fmt: skip

__all__ = [
    "BinarySphericalQuantizer",
    "CodeVocabulary",
    "DiscreteDiffusionScheduler",
    "FSQuantizer",
    "GumbelQuantizer",
    "HierarchicalVQModel",
    "HierarchicalVQModelOutput",
    "LookupFreeQuantizer",
    "PatchDiscriminator",
    "Quantizer",
    "QuantizerOutput",
    "ResidualQuantizer",
    "ResidualQuantizerOutput",
    "SimVQuantizer",
    "VQAutoregressivePipeline",
    "VQAutoregressiveTextToImagePipeline",
    "VQDiscreteDiffusionPipeline",
    "VQDiscreteDiffusionPipelineOutput",
    "VQDiscreteDiffusionTextToImagePipeline",
    "VQHierarchicalPipeline",
    "VQHierarchicalPipelineOutput",
    "VQVAEModel",
    "VQVAEModelOutput",
    "VQPipeline",
    "VQPipelineOutput",
    "VectorQuantizer",
    "autoregressive_prior_config",
    "denoiser_config",
    "load_tokenizer",
]

# The 0.1 names collided with diffusers' own classes (diffusers.VQModel, diffusers.VQDiffusionPipeline); they stay
# importable, with a FutureWarning, for one release so that saved folders and user code keep working.
DEPRECATED_NAMES = {
    "VQModel": "VQVAEModel",
    "VQModelOutput": "VQVAEModelOutput",
    "VQDiffusionPipeline": "VQDiscreteDiffusionPipeline",
    "VQDiffusionPipelineOutput": "VQDiscreteDiffusionPipelineOutput",
}


def __getattr__(name: str):
    if name in _PUBLIC:  # only reached when launched as `vq-hub` (else every public name is imported above)
        import importlib

        module, attribute = _PUBLIC[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    if name in DEPRECATED_NAMES:
        new_name = DEPRECATED_NAMES[name]
        warnings.warn(
            f"`vq_hub.{name}` is deprecated and will be removed in vq_hub 0.3: use `vq_hub.{new_name}` (the old name "
            f"collided with diffusers' own `{name}`). Folders saved with the old name still load; re-save them to "
            "record the new one.",
            FutureWarning,
            stacklevel=2,
        )
        return globals()[new_name] if new_name in globals() else __getattr__(new_name)
    raise AttributeError(f"module 'vq_hub' has no attribute {name!r}")
