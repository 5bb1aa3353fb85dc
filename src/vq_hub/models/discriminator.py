"""PatchGAN discriminator for VQ-GAN (Isola et al., 2017; taming-transformers' NLayerDiscriminator)."""

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .modeling_utils import AtomicSaveMixin

NORM_TYPES = ("group", "batch", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(min(32, channels // 4) or 1, channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class PatchDiscriminator(AtomicSaveMixin, ModelMixin, ConfigMixin):
    r"""
    A stack of stride-2 4×4 convolutions that scores overlapping patches: one logit per patch, real > 0 > fake.

    Parameters:
        in_channels (`int`, defaults to 3): Image channels.
        base_channels (`int`, defaults to 64): Channels of the first layer, doubled per layer up to 8×.
        num_layers (`int`, defaults to 3): Stride-2 layers after the first (3 gives 70×70 receptive fields).
        norm_type (`str`, defaults to `"group"`):
            `"group"` (no running statistics, so it behaves the same in train and eval mode and on every process),
            `"batch"` (taming-transformers' choice) or `"none"`.
    """

    @register_to_config
    def __init__(self, in_channels: int = 3, base_channels: int = 64, num_layers: int = 3, norm_type: str = "group"):
        super().__init__()
        if norm_type not in NORM_TYPES:
            raise ValueError(f"`norm_type` must be one of {NORM_TYPES}, got {norm_type!r}")
        if num_layers < 1:
            raise ValueError(f"`num_layers` must be at least 1, got {num_layers}")
        layers = [nn.Sequential(nn.Conv2d(in_channels, base_channels, 4, 2, 1), nn.LeakyReLU(0.2))]
        channels = base_channels
        for index in range(1, num_layers + 1):
            out_channels = base_channels * min(2**index, 8)
            stride = 2 if index < num_layers else 1
            layers.append(
                nn.Sequential(
                    nn.Conv2d(channels, out_channels, 4, stride, 1, bias=norm_type == "none"),
                    _norm(norm_type, out_channels),
                    nn.LeakyReLU(0.2),
                )
            )
            channels = out_channels
        self.blocks = nn.ModuleList(layers)
        self.conv_out = nn.Conv2d(channels, 1, 4, 1, 1)
        self.apply(_init_weights)

    def forward(
        self, images: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Patch logits `(B, 1, h, w)`; with `return_features`, also every block's activations (for feature
        matching)."""
        if images.ndim != 4 or images.shape[1] != self.config.in_channels:
            raise ValueError(
                f"`images` must be (batch, {self.config.in_channels}, height, width), got {tuple(images.shape)}"
            )
        features = []
        hidden = images
        for block in self.blocks:
            hidden = block(hidden)
            features.append(hidden)
        logits = self.conv_out(hidden)
        return (logits, features) if return_features else logits


def _init_weights(module: nn.Module) -> None:
    """DCGAN initialisation, as taming-transformers: N(0, 0.02) convolutions, N(1, 0.02) norm scales."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
