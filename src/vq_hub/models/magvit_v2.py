"""The MAGVIT-v2 image tokenizer as Open-MAGVIT2 (TencentARC/SEED-Voken) builds it: a convolutional encoder, a
lookup-free quantizer, and a decoder whose every level starts with a group norm conditioned on the quantized latents.

It is a class of its own because diffusers' `Encoder`/`Decoder` (and so `VQVAEModel`) cannot express it exactly:
residual convolutions without bias, no attention, as many middle residual blocks as per level, a 1×1 `conv_out` in
the encoder, no `quant_conv`, depth-to-space (DCR order) upsampling, and the adaptive group norm. The token API is
`VQVAEModel`'s, method for method, so pipelines, the codec and the CLI take either.
"""

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vq_model import VQEncoderOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils.accelerate_utils import apply_forward_hook
from torch import nn

from ..quantizers.settings import QuantizerSettings
from ..utils.checks import check_int
from .modeling_utils import AtomicSaveMixin
from .tokenizer_utils import ImageInputMixin
from .vq_model import VQVAEModel

EPS = 1e-6  # Open-MAGVIT2's GroupNorm eps


class ResidualBlock(nn.Module):
    """norm → SiLU → 3×3 conv, twice, plus the input (through a 1×1 conv when the width changes); no conv biases."""

    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=EPS)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=EPS)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1, bias=False) if in_channels != out_channels \
            else nn.Identity()  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.conv1(F.silu(self.norm1(x)))
        return self.conv2(F.silu(self.norm2(hidden))) + self.nin_shortcut(x)


def depth_to_space(x: torch.Tensor, block: int) -> torch.Tensor:
    """DCR depth-to-space: channel `(i·block + j)·C + c` becomes pixel offset `(i, j)` of channel `c`. (torch's
    `pixel_shuffle` is the CRD order, channel `c·block² + i·block + j`, which the released weights do not use.)"""
    batch, channels, height, width = x.shape
    x = x.view(batch, block, block, channels // block**2, height, width).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(batch, channels // block**2, height * block, width * block)


class DepthToSpaceUpsampler(nn.Module):
    """×2 upsampling: a 3×3 conv to four times the channels, then DCR depth-to-space."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels * 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depth_to_space(self.conv1(x), 2)


class AdaptiveGroupNorm(nn.Module):
    """Group norm without affine weights whose per-channel scale and shift are linear in the quantized latents'
    per-channel standard deviation and mean over positions. The variance is torch's default, unbiased (as the
    source computes it, whatever its comment says), so a grid of one position has none."""

    def __init__(self, latent_channels: int, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=EPS, affine=False)
        self.gamma = nn.Linear(latent_channels, channels)
        self.beta = nn.Linear(latent_channels, channels)

    def forward(self, x: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
        flat = quantized.flatten(2)
        scale = self.gamma((flat.var(dim=-1) + EPS).sqrt())
        shift = self.beta(flat.mean(dim=-1))
        return self.norm(x) * scale[:, :, None, None] + shift[:, :, None, None]


def _level(blocks: list[nn.Module], name: str | None = None, resample: nn.Module | None = None) -> nn.Module:
    level = nn.Module()
    level.block = nn.ModuleList(blocks)
    if resample is not None:
        setattr(level, name, resample)
    return level


class MagvitV2Encoder(nn.Module):
    """conv_in → per level: residual blocks, a stride-2 conv (all but the last) → middle residual blocks → norm →
    SiLU → 1×1 conv to the latent channels."""

    def __init__(self, in_channels, block_out_channels, layers_per_block, latent_channels, groups):
        super().__init__()
        channels = block_out_channels[0]
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        self.down = nn.ModuleList()
        for index, width in enumerate(block_out_channels):
            blocks = [ResidualBlock(channels if j == 0 else width, width, groups) for j in range(layers_per_block)]
            channels = width
            last = index == len(block_out_channels) - 1
            self.down.append(_level(blocks, "downsample", None if last else nn.Conv2d(width, width, 3, 2, 1)))
        self.mid_block = nn.ModuleList(ResidualBlock(channels, channels, groups) for _ in range(layers_per_block))
        self.norm_out = nn.GroupNorm(groups, channels, eps=EPS)
        self.conv_out = nn.Conv2d(channels, latent_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                x = block(x)
            if hasattr(level, "downsample"):
                x = level.downsample(x)
        for block in self.mid_block:
            x = block(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class MagvitV2Decoder(nn.Module):
    """conv_in → middle residual blocks → per level from the coarsest: adaptive group norm on the quantized
    latents, residual blocks, a depth-to-space ×2 (all but the finest) → norm → SiLU → 3×3 conv. `up[i]` and
    `adaptive[i]` are level `i` counted from the finest, as the encoder's `down[i]`."""

    def __init__(self, out_channels, block_out_channels, layers_per_block, latent_channels, groups):
        super().__init__()
        channels = block_out_channels[-1]
        self.conv_in = nn.Conv2d(latent_channels, channels, 3, padding=1)
        self.mid_block = nn.ModuleList(ResidualBlock(channels, channels, groups) for _ in range(layers_per_block))
        levels, adaptive = [None] * len(block_out_channels), [None] * len(block_out_channels)
        for index in reversed(range(len(block_out_channels))):
            width = block_out_channels[index]
            adaptive[index] = AdaptiveGroupNorm(latent_channels, channels, groups)
            blocks = [ResidualBlock(channels if j == 0 else width, width, groups) for j in range(layers_per_block)]
            channels = width
            levels[index] = _level(blocks, "upsample", DepthToSpaceUpsampler(width) if index > 0 else None)
        self.up = nn.ModuleList(levels)
        self.adaptive = nn.ModuleList(adaptive)
        self.norm_out = nn.GroupNorm(groups, channels, eps=EPS)
        self.conv_out = nn.Conv2d(channels, out_channels, 3, padding=1)

    def forward(self, quantized: torch.Tensor) -> torch.Tensor:
        if quantized.shape[-2] * quantized.shape[-1] < 2:
            raise ValueError("the decoder's adaptive group norm needs a code grid of at least two positions (the "
                             f"unbiased variance of one is undefined), got {tuple(quantized.shape[-2:])}")  # fmt: skip
        x = self.conv_in(quantized)
        for block in self.mid_block:
            x = block(x)
        for index in reversed(range(len(self.up))):
            x = self.adaptive[index](x, quantized)
            for block in self.up[index].block:
                x = block(x)
            if index > 0:
                x = self.up[index].upsample(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class MagvitV2Tokenizer(ImageInputMixin, AtomicSaveMixin, ModelMixin, ConfigMixin):
    r"""
    The MAGVIT-v2 tokenizer of Open-MAGVIT2: images in [-1, 1] ↔ grids of lookup-free codes (one bit per latent
    channel, bit `i` the sign of channel `i`). Converted Open-MAGVIT2 checkpoints load into it (see
    `vq_hub.conversion_open_magvit2`); its token API (`encode`, `decode`, `forward`, `tokenize`, `detokenize`,
    `quantize`) is [`VQVAEModel`]'s.

    The LFQ options `lfq_scale`, `commitment_beta`, `entropy_loss_weight`, `entropy_loss_weight_end`,
    `entropy_loss_anneal_steps`, `codebook_entropy_weight`, `entropy_temperature` and `entropy_group_size` are
    [`VQVAEModel`]'s (training only; the defaults are Open-MAGVIT2's: β 0.25, entropy weight 0.1, τ 0.01).

    Parameters:
        in_channels (`int`, defaults to 3): Image channels in.
        out_channels (`int`, defaults to 3): Image channels out.
        block_out_channels (`tuple[int]`): Widths of the levels, finest first (Open-MAGVIT2: `ch × ch_mult`,
            128 × (1, 1, 2, 2, 4)); the image is downsampled by `2 ** (len(block_out_channels) - 1)`.
        layers_per_block (`int`, defaults to 4): Residual blocks per level, and in each middle block.
        latent_channels (`int`, defaults to 18): Channels of the latents, one bit each.
        num_vq_embeddings (`int`, defaults to 2**18): Codebook size, `2 ** latent_channels` for Open-MAGVIT2 (another
            power of two puts linear projections around the quantizer).
        sample_size (`int`, defaults to 256): The training image size.
        norm_num_groups (`int`, defaults to 32): Groups of every group norm.
        quantizer_type (`str`, defaults to `"lfq"`): Always `"lfq"`; recorded so that code reading any tokenizer's
            config finds it.
    """

    _skip_layerwise_casting_patterns = ["quantize"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        block_out_channels: tuple[int, ...] = (128, 128, 256, 256, 512),
        layers_per_block: int = 4,
        latent_channels: int = 18,
        num_vq_embeddings: int = 2**18,
        sample_size: int = 256,
        norm_num_groups: int = 32,
        quantizer_type: str = "lfq",
        lfq_scale: float = 1.0,
        commitment_beta: float = 0.25,
        entropy_loss_weight: float = 0.1,
        entropy_loss_weight_end: float | None = None,
        entropy_loss_anneal_steps: int = 0,
        codebook_entropy_weight: float = 1.0,
        entropy_temperature: float | None = None,
        entropy_group_size: int = 8,
    ):
        super().__init__()
        if quantizer_type != "lfq":
            raise ValueError(f"`quantizer_type` must be 'lfq' (MAGVIT-v2's quantizer), got {quantizer_type!r}")
        if not block_out_channels:
            raise ValueError("`block_out_channels` must name at least one level")
        check_int(layers_per_block, "layers_per_block", minimum=1)
        for width in block_out_channels:
            if check_int(width, "block_out_channels", minimum=1) % norm_num_groups:
                raise ValueError(f"every width in `block_out_channels` must be a multiple of `norm_num_groups` "
                                 f"({norm_num_groups}), got {list(block_out_channels)}")  # fmt: skip
        coder = dict(block_out_channels=tuple(block_out_channels), layers_per_block=layers_per_block,
                     latent_channels=latent_channels, groups=norm_num_groups)  # fmt: skip
        self.encoder = MagvitV2Encoder(in_channels, **coder)
        self.quantize = QuantizerSettings.from_config(self.config).build(latent_channels)
        self.decoder = MagvitV2Decoder(out_channels, **coder)

    @property
    def downsample_factor(self) -> int:
        """Image pixels per code along each side."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    @apply_forward_hook
    def encode(self, x: torch.Tensor, return_dict: bool = True) -> VQEncoderOutput | tuple[torch.Tensor]:
        """Images → pre-quantization latents `(B, latent_channels, h, w)` (no `quant_conv`: the encoder's output)."""
        latents = self.encoder(self.prepare_images(x))
        return VQEncoderOutput(latents=latents) if return_dict else (latents,)

    # The rest of the token API is VQVAEModel's, word for word: it only calls `encode`, `quantize` and
    # `_decode_quantized`.
    codebook_size = VQVAEModel.codebook_size
    code_depth = VQVAEModel.code_depth
    code_grid_size = VQVAEModel.code_grid_size
    decode = VQVAEModel.decode
    forward = VQVAEModel.forward
    tokenize = VQVAEModel.tokenize
    detokenize = VQVAEModel.detokenize

    def _decode_quantized(self, quantized: torch.Tensor) -> torch.Tensor:
        return self.decoder(quantized.to(self.decoder.conv_in.weight.dtype))
