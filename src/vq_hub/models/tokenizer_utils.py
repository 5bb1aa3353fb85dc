"""What every vq_hub tokenizer shares: the checks and conversions of the images it is given, and loading a saved
tokenizer as the class its config names."""

import json
import math
import os
import warnings
from pathlib import Path

import torch


class ImageInputMixin:
    """`prepare_images` for a diffusers tokenizer with `config.in_channels`, `downsample_factor`, `training` and
    `dtype`. Put it before `ModelMixin` in the bases."""

    # Any finite float is accepted (diffusers' convention); past this bound, non-negative floats look like [0, 255]
    # pixels and get a warning, once per process.
    pixel_bound = 1.5
    _warned_byte_range = False

    @property
    def image_size_multiple(self) -> int:
        """Image heights and widths must be multiples of this: the coarsest level's pixels per code."""
        return self.downsample_factor

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """Check `images` `(B, in_channels, H, W)` and convert what is unambiguous: floating point is cast to the
        model's dtype, uint8 is taken as [0, 255] pixels and mapped to [-1, 1]; other dtypes are refused. Out of
        training, NaN/inf are an error too; any finite float passes, as in diffusers (while training, the scripts'
        guard on a non-finite loss covers it without a device sync per step)."""
        if not isinstance(images, torch.Tensor):
            raise TypeError(
                f"`images` must be a torch.Tensor (batch, channels, height, width), got {type(images).__name__}"
            )
        if images.ndim != 4:
            raise ValueError(
                f"`images` must be a 4D tensor (batch, channels, height, width), got {tuple(images.shape)}"
            )
        if images.shape[0] == 0:
            raise ValueError("`images` is an empty batch: give at least one image")
        if images.shape[1] != self.config.in_channels:
            raise ValueError(
                f"`images` must have {self.config.in_channels} channels (config `in_channels`), got {images.shape[1]}"
            )
        height, width = images.shape[-2:]
        factor = self.image_size_multiple
        if height % factor or width % factor or height == 0 or width == 0:
            raise ValueError(f"`images` height and width must be positive multiples of the downsampling factor "
                             f"{factor}, got {height}×{width}")  # fmt: skip
        if images.dtype == torch.uint8:
            images = images.float() / 127.5 - 1
        elif not images.dtype.is_floating_point:
            raise TypeError(f"`images` must be floating point in [-1, 1] (or uint8 in [0, 255]), got {images.dtype}; "
                            "integer code grids go to `detokenize`")  # fmt: skip
        if not self.training:
            low, high = torch.aminmax(images.detach())
            low, high = float(low), float(high)
            if not (math.isfinite(low) and math.isfinite(high)):
                raise ValueError("`images` must hold finite pixels, got NaN or infinite values (uint8 images in "
                                 "[0, 255] are converted)")  # fmt: skip
            if low >= 0 and high > self.pixel_bound and high <= 255 and not ImageInputMixin._warned_byte_range:
                # Like diffusers' models, any finite float tensor is taken as it is; this is the likely mistake.
                ImageInputMixin._warned_byte_range = True
                warnings.warn(f"`images` look like [0, 255] floats (values in [{low:.4g}, {high:.4g}]); the tokenizer "
                              "expects [-1, 1]: pass `images / 127.5 - 1` (or uint8, which is converted)",
                              stacklevel=3)  # fmt: skip
        return images.to(self.dtype)


def tokenizer_classes() -> dict[str, type]:
    """The tokenizer classes a saved config may name, by `_class_name` (the deprecated `VQModel` included)."""
    from .hierarchical_vq_model import HierarchicalVQModel
    from .magvit_v2 import MagvitV2Tokenizer
    from .vq_model import VQVAEModel

    return {"VQVAEModel": VQVAEModel, "VQModel": VQVAEModel, "HierarchicalVQModel": HierarchicalVQModel,
            "MagvitV2Tokenizer": MagvitV2Tokenizer}


def load_tokenizer(pretrained_model_name_or_path: str | os.PathLike, subfolder: str | None = None, **kwargs):
    """A saved tokenizer (folder or Hub id) as the class its `config.json` names: `VQVAEModel`,
    `HierarchicalVQModel` or `MagvitV2Tokenizer`. Where a tokenizer is loaded without knowing which (the CLI, `encode_dataset.py`, the prior
    scripts), load it with this."""
    from .vq_model import VQVAEModel

    folder = Path(pretrained_model_name_or_path, subfolder or "")
    if (folder / "config.json").is_file():
        class_name = json.loads((folder / "config.json").read_text()).get("_class_name")
    else:  # a Hub id: diffusers fetches the config (or finds it in the cache)
        class_name = VQVAEModel.load_config(pretrained_model_name_or_path, subfolder=subfolder).get("_class_name")
    classes = tokenizer_classes()
    if class_name not in classes:
        raise ValueError(f"{str(pretrained_model_name_or_path)!r} holds a {class_name!r}, not a vq_hub tokenizer "
                         f"(known: {sorted(set(classes) - {'VQModel'})})")  # fmt: skip
    return classes[class_name].from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)
