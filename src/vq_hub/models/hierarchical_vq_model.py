"""VQ-VAE-2 (Razavi et al., 2019): a top level of coarse codes for global structure and a bottom level of fine codes
quantized knowing the top, both decoded together."""

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import Decoder, Encoder
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from ..quantizers import Quantizer, QuantizerSettings
from ..utils.checks import check_float
from .modeling_utils import AtomicSaveMixin
from .tokenizer_utils import ImageInputMixin

LEVELS = ("top", "bottom")
_STATISTICS = ("codebook_loss", "commitment_loss", "auxiliary_loss", "perplexity", "codebook_usage")


@dataclass
class HierarchicalVQModelOutput(BaseOutput):
    """
    Output of [`HierarchicalVQModel.forward`]: the reconstruction, and each level's codes, losses and statistics (as in
    [`VQVAEModelOutput`]), so the collapse of one level shows.

    Args:
        sample (`torch.Tensor` `(batch_size, out_channels, height, width)`): The reconstruction, in [-1, 1].
        top_codes (`torch.LongTensor` `(batch_size, h_top, w_top)`), bottom_codes (`(batch_size, h_bottom, w_bottom)`):
            The chosen codes of each level.
        top_codebook_loss, top_commitment_loss, top_auxiliary_loss, bottom_… (`torch.Tensor`): Each level's
            quantizer losses.
        top_perplexity, top_codebook_usage, bottom_perplexity, bottom_codebook_usage (`torch.Tensor`): exp(entropy)
            of each level's code histogram in the batch and the fraction of its codebook used.
    """

    sample: torch.Tensor | None = None
    top_codes: torch.LongTensor | None = None
    bottom_codes: torch.LongTensor | None = None
    top_codebook_loss: torch.Tensor | None = None
    top_commitment_loss: torch.Tensor | None = None
    top_auxiliary_loss: torch.Tensor | None = None
    top_perplexity: torch.Tensor | None = None
    top_codebook_usage: torch.Tensor | None = None
    bottom_codebook_loss: torch.Tensor | None = None
    bottom_commitment_loss: torch.Tensor | None = None
    bottom_auxiliary_loss: torch.Tensor | None = None
    bottom_perplexity: torch.Tensor | None = None
    bottom_codebook_usage: torch.Tensor | None = None

    @property
    def codes(self) -> tuple[torch.LongTensor, torch.LongTensor]:
        """`(top_codes, bottom_codes)`, as `tokenize` returns them."""
        return self.top_codes, self.bottom_codes

    @property
    def quantizer_loss(self) -> torch.Tensor:
        """Both levels' quantizer terms together: add a reconstruction loss and backpropagate."""
        return sum(getattr(self, f"{level}_{name}") for level in LEVELS for name in _STATISTICS[:3])

    def level_statistics(self, level: str) -> dict[str, torch.Tensor]:
        """`{"codebook_loss", "commitment_loss", "auxiliary_loss", "perplexity", "codebook_usage"}` of `level`."""
        if level not in LEVELS:
            raise ValueError(f"`level` must be one of {LEVELS}, got {level!r}")
        return {name: getattr(self, f"{level}_{name}") for name in _STATISTICS}


class HierarchicalVQModel(ImageInputMixin, AtomicSaveMixin, ModelMixin, ConfigMixin):
    r"""
    A two-level VQ-VAE-2 tokenizer: images in [-1, 1] ↔ a top grid of coarse codes and a bottom grid of fine ones.

    The encoder (diffusers' `Encoder`) maps the image to bottom features; `top_encoder` downsamples them further to
    the top latents, which are quantized. `top_decoder` brings the quantized top back to the bottom's resolution,
    where it is concatenated with the bottom features and quantized by the bottom level's own codebook: the bottom
    codes only have to say what the top does not. The decoder sees both quantized maps (the top upsampled by a
    transposed convolution), as in the reference implementation (rosinality/vq-vae-2-pytorch).

    Parameters:
        in_channels, out_channels, act_fn, layers_per_block, norm_num_groups, sample_size, mid_block_add_attention:
            As in [`VQVAEModel`] (and diffusers' `VQModel`), for every encoder and decoder.
        block_out_channels (`tuple[int]`), down_block_types, up_block_types (*optional*): The image encoder and
            decoder; the bottom grid is the image downsampled by `2 ** (len(block_out_channels) - 1)`. Block types
            default to diffusers' plain `DownEncoderBlock2D` / `UpDecoderBlock2D`.
        latent_channels (`int`): Channels of the bottom features (and of the top decoder's output).
        vq_embed_dim (`int`, *optional*): Channels the bottom level quantizes (default `latent_channels`).
        top_block_out_channels (`tuple[int]`), top_down_block_types, top_up_block_types (*optional*): The top encoder
            and decoder; the top grid is the bottom grid downsampled by `2 ** (len(top_block_out_channels) - 1)`, so
            at least two entries.
        top_latent_channels (`int`, *optional*), top_vq_embed_dim (`int`, *optional*): Channels of the top encoder's
            output and of the top codes (default `latent_channels` and `top_latent_channels`).
        top_quantizer, bottom_quantizer (`dict`, *optional*): Each level's quantizer: any option of [`VQVAEModel`]'s
            quantizer (`quantizer_type`, `num_vq_embeddings`, `use_ema`, `fsq_levels`, …, see
            [`~vq_hub.quantizers.QuantizerSettings`]); missing options take their defaults, and the saved config
            records them all.
        bottom_dropout (`float`, defaults to 0): While training, the fraction of images whose bottom level the decoder
            does not see (a learned null map instead). It makes `detokenize_top` a meaningful top-only decode and
            pushes global structure into the top codes; 0 is the reference model.
    """

    _skip_layerwise_casting_patterns = ["quantize"]
    level_names = LEVELS

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        block_out_channels: tuple[int, ...] = (64, 128, 128),
        down_block_types: tuple[str, ...] | None = None,
        up_block_types: tuple[str, ...] | None = None,
        layers_per_block: int = 1,
        act_fn: str = "silu",
        latent_channels: int = 64,
        vq_embed_dim: int | None = None,
        norm_num_groups: int = 32,
        sample_size: int = 32,
        mid_block_add_attention: bool = True,
        top_block_out_channels: tuple[int, ...] = (128, 128),
        top_down_block_types: tuple[str, ...] | None = None,
        top_up_block_types: tuple[str, ...] | None = None,
        top_latent_channels: int | None = None,
        top_vq_embed_dim: int | None = None,
        top_quantizer: dict | None = None,
        bottom_quantizer: dict | None = None,
        bottom_dropout: float = 0.0,
    ):
        super().__init__()
        down_block_types = _block_types(down_block_types, "DownEncoderBlock2D", block_out_channels, "")
        up_block_types = _block_types(up_block_types, "UpDecoderBlock2D", block_out_channels, "")
        top_down_block_types = _block_types(top_down_block_types, "DownEncoderBlock2D", top_block_out_channels, "top_")
        top_up_block_types = _block_types(top_up_block_types, "UpDecoderBlock2D", top_block_out_channels, "top_")
        if len(top_block_out_channels) < 2:
            raise ValueError("`top_block_out_channels` needs at least two entries: the top grid must be coarser than "
                             f"the bottom one (it is downsampled by 2 ** (entries - 1)), got {top_block_out_channels}")  # fmt: skip
        check_float(bottom_dropout, "bottom_dropout", minimum=0.0, maximum=1.0)
        if bottom_dropout >= 1:
            raise ValueError(f"`bottom_dropout` must be below 1 (the decoder must see the bottom codes), got {bottom_dropout}")  # fmt: skip
        top_settings = QuantizerSettings.from_dict(top_quantizer, "top_quantizer")
        bottom_settings = QuantizerSettings.from_dict(bottom_quantizer, "bottom_quantizer")
        for name, settings in (("top_quantizer", top_settings), ("bottom_quantizer", bottom_settings)):
            if settings.quantizer_type == "residual":  # the two-level pipelines and priors take one code per cell
                raise ValueError(f"`{name}`: quantizer_type='residual' is for a single-level VQVAEModel; each level "
                                 "of a HierarchicalVQModel holds one code per position")  # fmt: skip
        # The saved config records every option of each level, defaults included.
        self.register_to_config(top_quantizer=top_settings.to_dict(), bottom_quantizer=bottom_settings.to_dict())
        vq_embed_dim = vq_embed_dim or latent_channels
        top_latent_channels = top_latent_channels or latent_channels
        top_vq_embed_dim = top_vq_embed_dim or top_latent_channels
        shared = dict(layers_per_block=layers_per_block, act_fn=act_fn, norm_num_groups=norm_num_groups,
                      mid_block_add_attention=mid_block_add_attention)  # fmt: skip

        # Image → bottom features → top latents → top codes.
        self.encoder = Encoder(in_channels=in_channels, out_channels=latent_channels, down_block_types=down_block_types,
                               block_out_channels=block_out_channels, double_z=False, **shared)  # fmt: skip
        self.top_encoder = Encoder(in_channels=latent_channels, out_channels=top_latent_channels,
                                   down_block_types=top_down_block_types, block_out_channels=top_block_out_channels,
                                   double_z=False, **shared)  # fmt: skip
        self.top_quant_conv = nn.Conv2d(top_latent_channels, top_vq_embed_dim, 1)
        self.top_quantize = top_settings.build(top_vq_embed_dim)
        # Quantized top → bottom resolution, concatenated with the bottom features → bottom codes.
        self.top_decoder = Decoder(in_channels=top_vq_embed_dim, out_channels=latent_channels,
                                   up_block_types=top_up_block_types, block_out_channels=top_block_out_channels,
                                   **shared)  # fmt: skip
        self.quant_conv = nn.Conv2d(2 * latent_channels, vq_embed_dim, 1)
        self.quantize = bottom_settings.build(vq_embed_dim)
        # Both quantized maps → image.
        factor = 2 ** (len(top_block_out_channels) - 1)
        self.top_upsample = nn.ConvTranspose2d(top_vq_embed_dim, top_vq_embed_dim, 2 * factor, factor, factor // 2)
        self.null_bottom = nn.Parameter(torch.zeros(vq_embed_dim))  # what the decoder sees for a dropped bottom
        self.post_quant_conv = nn.Conv2d(top_vq_embed_dim + vq_embed_dim, latent_channels, 1)
        self.decoder = Decoder(in_channels=latent_channels, out_channels=out_channels, up_block_types=up_block_types,
                               block_out_channels=block_out_channels, **shared)  # fmt: skip

    # ----------------------------------------------------------------------------------------------- properties

    @property
    def downsample_factor(self) -> int:
        """Image pixels per bottom code along each side."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    @property
    def top_downsample_factor(self) -> int:
        """Image pixels per top code along each side."""
        return self.downsample_factor * 2 ** (len(self.config.top_block_out_channels) - 1)

    @property
    def image_size_multiple(self) -> int:
        return self.top_downsample_factor

    @property
    def quantizers(self) -> dict[str, Quantizer]:
        """Each level's quantizer, top first."""
        return {"top": self.top_quantize, "bottom": self.quantize}

    @property
    def codebook_sizes(self) -> tuple[int, int]:
        """`(top, bottom)` codebook sizes."""
        return self.top_quantize.codebook_size, self.quantize.codebook_size

    def code_grid_sizes(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """The `((h_top, w_top), (h_bottom, w_bottom))` code grids of an image of `height × width` pixels."""
        top, bottom = self.top_downsample_factor, self.downsample_factor
        return (height // top, width // top), (height // bottom, width // bottom)

    # ----------------------------------------------------------------------------------------------- forward

    def forward(self, sample: torch.Tensor, return_dict: bool = True) -> HierarchicalVQModelOutput | tuple:
        """Reconstruct `sample` and report each level's quantizer losses and codebook statistics."""
        features = self.encoder(self.prepare_images(sample))
        top = self.top_quantize(self.top_quant_conv(self.top_encoder(features)))
        bottom = self.quantize(self._bottom_latents(features, top.quantized))
        bottom_quantized = bottom.quantized
        if self.training and self.config.bottom_dropout > 0:  # global RNG, like the scripts' flips: resumable
            dropped = torch.rand(bottom_quantized.shape[0], device=bottom_quantized.device) < self.config.bottom_dropout
            bottom_quantized = torch.where(dropped[:, None, None, None], self._null_bottom_like(bottom_quantized),
                                           bottom_quantized)  # fmt: skip
        output = HierarchicalVQModelOutput(
            sample=self._decode_quantized(top.quantized, bottom_quantized),
            top_codes=top.codes,
            bottom_codes=bottom.codes,
            **{f"top_{name}": getattr(top, name) for name in _STATISTICS},
            **{f"bottom_{name}": getattr(bottom, name) for name in _STATISTICS},
        )
        return output if return_dict else output.to_tuple()

    # ----------------------------------------------------------------------------------------------- token API

    @torch.no_grad()
    def tokenize(self, images: torch.Tensor) -> tuple[torch.LongTensor, torch.LongTensor]:
        """Images `(B, in_channels, H, W)` in [-1, 1] → `(top codes (B, H/f_top, W/f_top), bottom codes
        (B, H/f, W/f))`; the bottom codes are chosen knowing the top ones, as in `forward`."""
        features = self.encoder(self.prepare_images(images))
        top_codes = self.top_quantize.latents_to_codes(self.top_quant_conv(self.top_encoder(features)))
        bottom_latents = self._bottom_latents(features, self.top_quantize.codes_to_latents(top_codes))
        return top_codes, self.quantize.latents_to_codes(bottom_latents)

    def detokenize(self, codes: tuple[torch.LongTensor, torch.LongTensor]) -> torch.Tensor:
        """`(top codes, bottom codes)` → images `(B, out_channels, h_bottom·f, w_bottom·f)` in roughly [-1, 1];
        equal to `forward(images).sample` at evaluation for the codes of `tokenize(images)`."""
        top_codes, bottom_codes = self.check_code_levels(codes)
        return self._decode_quantized(self.top_quantize.codes_to_latents(top_codes),
                                      self.quantize.codes_to_latents(bottom_codes))  # fmt: skip

    def detokenize_top(self, top_codes: torch.LongTensor) -> torch.Tensor:
        """Top codes alone → images, the bottom replaced by the null map the decoder learns with `bottom_dropout`
        (without it, this decode is not meaningful: the decoder never saw a missing bottom)."""
        top_quantized = self.top_quantize.codes_to_latents(top_codes)
        batch, _, height, width = top_quantized.shape
        factor = self.top_downsample_factor // self.downsample_factor
        shape = (batch, self.null_bottom.shape[0], height * factor, width * factor)
        return self._decode_quantized(top_quantized, self._null_bottom_like(top_quantized.new_empty(shape)))

    def check_code_levels(self, codes) -> tuple[torch.LongTensor, torch.LongTensor]:
        """`codes` as a `(top, bottom)` pair whose grids fit each other (the codebook ranges are checked by the
        quantizers)."""
        if isinstance(codes, torch.Tensor) or not isinstance(codes, (tuple, list)) or len(codes) != 2:
            raise TypeError("`codes` of a HierarchicalVQModel must be a pair (top codes (B, h_top, w_top), bottom "
                            f"codes (B, h_bottom, w_bottom)), as `tokenize` returns, got {_describe(codes)}")  # fmt: skip
        top_codes, bottom_codes = codes
        for name, grid in (("top", top_codes), ("bottom", bottom_codes)):
            if not isinstance(grid, torch.Tensor) or grid.ndim != 3:
                raise ValueError(f"the {name} codes must be a 3D tensor (batch, height, width), got {_describe(grid)}")
        factor = self.top_downsample_factor // self.downsample_factor
        expected = (top_codes.shape[0], top_codes.shape[1] * factor, top_codes.shape[2] * factor)
        if tuple(bottom_codes.shape) != expected:
            raise ValueError(f"the bottom grid must be {factor}× the top grid ({tuple(top_codes.shape)} → {expected}) "
                             f"with the same batch, got {tuple(bottom_codes.shape)}")  # fmt: skip
        return top_codes, bottom_codes

    # ----------------------------------------------------------------------------------------------- internals

    def _bottom_latents(self, features: torch.Tensor, top_quantized: torch.Tensor) -> torch.Tensor:
        """The bottom level's latents: its features next to the top decoded to their resolution."""
        top_decoded = self.top_decoder(top_quantized.to(self.top_decoder.conv_in.weight.dtype))
        return self.quant_conv(torch.cat([features, top_decoded.to(features.dtype)], dim=1))

    def _decode_quantized(self, top_quantized: torch.Tensor, bottom_quantized: torch.Tensor) -> torch.Tensor:
        dtype = self.decoder.conv_in.weight.dtype
        top_upsampled = self.top_upsample(top_quantized.to(dtype))
        return self.decoder(self.post_quant_conv(torch.cat([top_upsampled, bottom_quantized.to(dtype)], dim=1)))

    def _null_bottom_like(self, bottom_quantized: torch.Tensor) -> torch.Tensor:
        return self.null_bottom.to(bottom_quantized.dtype)[None, :, None, None].expand_as(bottom_quantized)


def _block_types(types, default: str, block_out_channels, prefix: str) -> tuple[str, ...]:
    if types is None:
        return (default,) * len(block_out_channels)
    if len(types) != len(block_out_channels):
        kind = "down" if "Down" in default else "up"
        raise ValueError(f"`{prefix}{kind}_block_types` must have one entry per `{prefix}block_out_channels` "
                         f"({len(block_out_channels)}), got {len(types)}")  # fmt: skip
    return tuple(types)


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"an object of type {type(value).__name__}"
