"""`ImageClassifier`: the small CNN whose penultimate features and logits score generated images offline (the role
Inception v3 plays for FID, trained by `examples/train_classifier.py` on a dataset's train split)."""

from dataclasses import dataclass

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput
from torch import nn

from ..models.modeling_utils import AtomicSaveMixin


@dataclass
class ImageClassifierOutput(BaseOutput):
    """
    Output of [`ImageClassifier`].

    Args:
        logits (`torch.Tensor` of shape `(batch_size, num_classes)`): Class scores (class accuracy, the
            Inception-Score analogue).
        features (`torch.Tensor` of shape `(batch_size, num_features)`): The penultimate layer, global-average-pooled
            ReLU activations (FID, KID, precision/recall).
    """

    logits: torch.Tensor | None = None
    features: torch.Tensor | None = None


class ImageClassifier(AtomicSaveMixin, ModelMixin, ConfigMixin):
    r"""
    A VGG-style CNN for small images: stages of `layers_per_block` 3×3 conv + BatchNorm + ReLU, a 2× max-pool between
    stages, global average pooling (the features), dropout and a linear layer (the logits).

    Images are `(B, in_channels, sample_size, sample_size)` in [-1, 1], prepared as `vq_hub.data.image_to_tensor`
    prepares them for the tokenizers (Fashion-MNIST padded from 28 to 32 pixels).

    Args:
        in_channels (`int`): 1 (grayscale) or 3 (RGB).
        sample_size (`int`): Image height and width the network was trained on.
        num_classes (`int`): Number of classes.
        class_names (`list[str]`, *optional*): A name per class, for reports.
        block_out_channels (`tuple[int]`): Channels of each stage; the last is the feature dimension.
        layers_per_block (`int`): Convolutions per stage.
        dropout (`float`): Dropout before the linear layer while training.
        dataset (`str`, *optional*): The dataset it was trained on (e.g. "fashion-mnist"), used to match it with models.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        sample_size: int = 32,
        num_classes: int = 10,
        class_names: list[str] | None = None,
        block_out_channels: tuple[int, ...] = (32, 64, 128),
        layers_per_block: int = 2,
        dropout: float = 0.1,
        dataset: str | None = None,
    ):
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"`in_channels` must be 1 or 3, got {in_channels}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"`class_names` has {len(class_names)} names for `num_classes` {num_classes}")
        layers, channels = [], in_channels
        for stage, out_channels in enumerate(block_out_channels):
            if stage > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(layers_per_block):
                layers += [nn.Conv2d(channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
                           nn.ReLU(inplace=True)]  # fmt: skip
                channels = out_channels
        self.body = nn.Sequential(*layers)
        self.feature_dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels, num_classes)

    @property
    def num_features(self) -> int:
        """Dimension of `features` (torchmetrics reads this name instead of probing with a dummy image)."""
        return self.config.block_out_channels[-1]

    def check_images(self, images: torch.Tensor) -> None:
        expected = (self.config.in_channels, self.config.sample_size, self.config.sample_size)
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != expected:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"`images` must be a float tensor (B, {expected[0]}, {expected[1]}, {expected[2]}) in "
                             f"[-1, 1] for this classifier, got {got}")  # fmt: skip
        if not images.is_floating_point():
            raise TypeError(f"`images` must be floating point in [-1, 1], got {images.dtype}")

    def forward(self, images: torch.Tensor, return_dict: bool = True) -> ImageClassifierOutput | tuple:
        self.check_images(images)
        features = self.body(images.to(self.dtype)).mean(dim=(2, 3))
        logits = self.head(self.feature_dropout(features))
        if not return_dict:
            return logits, features
        return ImageClassifierOutput(logits=logits, features=features)
