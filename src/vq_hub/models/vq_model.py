"""The image tokenizer: encoder → quantizer → decoder, a diffusers model with a token API."""

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import Decoder, DecoderOutput, Encoder
from diffusers.models.autoencoders.vq_model import VQEncoderOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from diffusers.utils.accelerate_utils import apply_forward_hook
from torch import nn

from ..code_levels import code_depth as quantizer_code_depth
from ..quantizers import Quantizer, ResidualQuantizer
from ..quantizers.settings import (  # noqa: F401 (QUANTIZER_TYPES, QUANTIZER_RECIPES, vector_quantizer_options: public)
    QUANTIZER_RECIPES, QUANTIZER_TYPES, QuantizerSettings, vector_quantizer_options,
)
from .modeling_utils import AtomicSaveMixin
from .tokenizer_utils import ImageInputMixin


@dataclass
class VQVAEModelOutput(BaseOutput):
    """
    Output of [`VQVAEModel.forward`].

    Args:
        sample (`torch.Tensor` of shape `(batch_size, out_channels, height, width)`): The reconstruction, in [-1, 1].
        codes (`torch.LongTensor` of shape `(batch_size, latent_height, latent_width)`): The chosen codes;
            `(batch_size, depth, latent_height, latent_width)` for a residual quantizer.
        codebook_loss (`torch.Tensor`): `||sg[z_e] − z_q||²` (zero for EMA codebooks, Gumbel and FSQ).
        commitment_loss (`torch.Tensor`): `β·||z_e − sg[z_q]||²` (zero for Gumbel and FSQ).
        auxiliary_loss (`torch.Tensor`): The quantizer's own regulariser: Gumbel's KL-to-uniform, or the LFQ/BSQ
            entropy loss, else zero.
        perplexity (`torch.Tensor`): exp(entropy) of the batch's code histogram.
        codebook_usage (`torch.Tensor`): Fraction of the codebook used in the batch.
        depth_perplexity (`torch.Tensor` of shape `(depth,)`, *optional*): A residual quantizer's perplexity at
            each depth (`perplexity` is then the overall figure, see [`~vq_hub.quantizers.ResidualQuantizer`]).
        depth_codebook_usage (`torch.Tensor` of shape `(depth,)`, *optional*): Its usage at each depth.
    """

    sample: torch.Tensor | None = None
    codes: torch.LongTensor | None = None
    codebook_loss: torch.Tensor | None = None
    commitment_loss: torch.Tensor | None = None
    auxiliary_loss: torch.Tensor | None = None
    perplexity: torch.Tensor | None = None
    codebook_usage: torch.Tensor | None = None
    depth_perplexity: torch.Tensor | None = None
    depth_codebook_usage: torch.Tensor | None = None

    @property
    def quantizer_loss(self) -> torch.Tensor:
        """All quantizer terms together: add a reconstruction loss and backpropagate."""
        return self.codebook_loss + self.commitment_loss + self.auxiliary_loss


class VQVAEModel(ImageInputMixin, AtomicSaveMixin, ModelMixin, ConfigMixin):
    r"""
    A VQ-VAE / VQ-GAN tokenizer: images in [-1, 1] ↔ grids of discrete codes.

    The encoder, decoder, `quant_conv` and `post_quant_conv` are diffusers' building blocks with diffusers
    [`~diffusers.VQModel`]'s config names and weight keys, so diffusers checkpoints convert by copying. The
    quantizer is chosen by `quantizer_type` and its options.

    `in_channels`, `out_channels`, `down_block_types`, `up_block_types`, `block_out_channels`, `layers_per_block`,
    `act_fn`, `latent_channels`, `sample_size`, `num_vq_embeddings`, `norm_num_groups`, `vq_embed_dim`,
    `scaling_factor`, `norm_type` and `mid_block_add_attention` are as in diffusers' `VQModel`. The image is
    downsampled by `2 ** (len(block_out_channels) - 1)`.

    Parameters:
        use_quant_conv (`bool`, defaults to `True`): 1×1 conv from `latent_channels` to `vq_embed_dim`.
        use_post_quant_conv (`bool`, defaults to `True`): 1×1 conv from `vq_embed_dim` back to `latent_channels`.
        quantizer_type (`str`, defaults to `"vector"`): `"vector"`, `"gumbel"`, `"fsq"`, `"lfq"` (lookup-free, MAGVIT-v2),
            `"bsq"` (binary spherical, BSQ-ViT), `"simvq"` (frozen random codebook behind a learned linear map) or
            `"residual"` (RQ-VAE: `quantizer_depth` vector-quantized codes per position).
        commitment_beta (`float`, defaults to 0.25): β of the commitment loss (vector, LFQ, BSQ, SimVQ).
        legacy_beta (`bool`): β on the codebook term, as taming-transformers and diffusers (converted checkpoints).
        quantizer_recipe (`str`, defaults to `"healthy"`): The defaults of the four vector-quantizer options below
            that are left unset (None): `"healthy"` = 16-d (at most `vq_embed_dim`) l2-normalised codes, k-means init,
            dead-code restarts under 0.5 (the recipe that keeps codebooks in use); `"plain"` = full-dimension codes,
            no normalisation, random init, no restarts (VQ-VAE, taming-transformers, diffusers). Configs saved before
            the recipe existed load as `"plain"`, exactly as they were saved.
        codebook_dim (`int`, *optional*): Low-dimensional codes with in/out projections (vector quantizer, SimVQ).
        use_l2_norm (`bool`, *optional*): Cosine-similarity lookup with l2-normalised codes (vector quantizer).
        use_ema (`bool`), ema_decay (`float`), ema_epsilon (`float`): EMA codebook updates (vector quantizer).
        kmeans_init (`bool`), kmeans_iters (`int`): k-means initialisation on the first batch (vector quantizer).
        dead_code_threshold (`float`): EMA usage under which a code is restarted; 0 disables (vector quantizer).
        gumbel_temperature (`float`), gumbel_kl_weight (`float`), gumbel_straight_through (`bool`):
            Gumbel-softmax options.
        fsq_levels (`list[int]`, *optional*): FSQ levels per dimension; `num_vq_embeddings` must equal their product.
        lfq_scale (`float`, defaults to 1.0): LFQ's quantized value per channel, ±scale. LFQ and BSQ take one bit per
            channel: `num_vq_embeddings` must be a power of two, `2^bits`.
        entropy_loss_weight (`float`, defaults to 0.1): LFQ/BSQ entropy loss weight at the start of training.
        entropy_loss_weight_end (`float`, *optional*): The weight it is annealed to, linearly over
            `entropy_loss_anneal_steps` training forward passes (constant without an end).
        entropy_loss_anneal_steps (`int`, defaults to 0): Length of the anneal.
        codebook_entropy_weight (`float`, defaults to 1.0): γ of the codebook-entropy term (LFQ, BSQ).
        entropy_temperature (`float`, *optional*): τ of the entropies' soft assignment (LFQ 0.01, BSQ 1.0 when None).
        entropy_group_size (`int`, defaults to 8): Bits per group of the factorised codebook entropy (LFQ, BSQ).
        quantizer_depth (`int`, *optional*): Codes per position of `quantizer_type="residual"` (RQ-VAE), default 2;
            each depth is a vector quantizer with the options above, quantizing the residual left by the earlier
            depths. Codes are then `(B, depth, h, w)`. Refused for other quantizer types.
        shared_codebook (`bool`, defaults to `False`): One codebook for all depths of a residual quantizer.
    """

    _skip_layerwise_casting_patterns = ["quantize"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",),
        up_block_types: tuple[str, ...] = ("UpDecoderBlock2D",),
        block_out_channels: tuple[int, ...] = (64,),
        layers_per_block: int = 1,
        act_fn: str = "silu",
        latent_channels: int = 3,
        sample_size: int = 32,
        num_vq_embeddings: int = 256,
        norm_num_groups: int = 32,
        vq_embed_dim: int | None = None,
        scaling_factor: float = 0.18215,
        norm_type: str = "group",
        mid_block_add_attention: bool = True,
        use_quant_conv: bool = True,
        use_post_quant_conv: bool = True,
        quantizer_type: str = "vector",
        commitment_beta: float = 0.25,
        legacy_beta: bool = False,
        quantizer_recipe: str = "healthy",
        codebook_dim: int | None = None,
        use_l2_norm: bool | None = None,
        use_ema: bool = False,
        ema_decay: float = 0.99,
        ema_epsilon: float = 1e-5,
        kmeans_init: bool | None = None,
        kmeans_iters: int = 10,
        dead_code_threshold: float | None = None,
        gumbel_temperature: float = 1.0,
        gumbel_kl_weight: float = 5e-4,
        gumbel_straight_through: bool = False,
        fsq_levels: list[int] | None = None,
        lfq_scale: float = 1.0,
        entropy_loss_weight: float = 0.1,
        entropy_loss_weight_end: float | None = None,
        entropy_loss_anneal_steps: int = 0,
        codebook_entropy_weight: float = 1.0,
        entropy_temperature: float | None = None,
        entropy_group_size: int = 8,
        quantizer_depth: int | None = None,
        shared_codebook: bool = False,
    ):
        super().__init__()
        if len(down_block_types) != len(block_out_channels) or len(up_block_types) != len(block_out_channels):
            raise ValueError(
                "`down_block_types`, `up_block_types` and `block_out_channels` must have the same length, got "
                f"{len(down_block_types)}, {len(up_block_types)} and {len(block_out_channels)}"
            )
        vq_embed_dim = vq_embed_dim if vq_embed_dim is not None else latent_channels
        if not use_quant_conv and vq_embed_dim != latent_channels:
            raise ValueError("`vq_embed_dim` must equal `latent_channels` when `use_quant_conv=False`")
        if not use_post_quant_conv and vq_embed_dim != latent_channels:
            raise ValueError("`vq_embed_dim` must equal `latent_channels` when `use_post_quant_conv=False`")

        self.encoder = Encoder(
            in_channels=in_channels,
            out_channels=latent_channels,
            down_block_types=down_block_types,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            act_fn=act_fn,
            norm_num_groups=norm_num_groups,
            double_z=False,
            mid_block_add_attention=mid_block_add_attention,
        )
        self.quant_conv = nn.Conv2d(latent_channels, vq_embed_dim, 1) if use_quant_conv else nn.Identity()
        self.quantize = self._build_quantizer(vq_embed_dim)
        self.post_quant_conv = nn.Conv2d(vq_embed_dim, latent_channels, 1) if use_post_quant_conv else nn.Identity()
        self.decoder = Decoder(
            in_channels=latent_channels,
            out_channels=out_channels,
            up_block_types=up_block_types,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            act_fn=act_fn,
            norm_num_groups=norm_num_groups,
            norm_type=norm_type,
            mid_block_add_attention=mid_block_add_attention,
        )

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        """As diffusers' `from_config` (which `from_pretrained` calls): a config saved before `quantizer_recipe`
        existed (vq_hub 0.1, or a diffusers `VQModel` config) takes the `"plain"` recipe, the defaults it was saved
        under, so it builds exactly the model it described."""
        if config is not None and "quantizer_recipe" not in config:
            config = {**config, "quantizer_recipe": "plain"}
        return super().from_config(config, return_unused_kwargs=return_unused_kwargs, **kwargs)

    def _build_quantizer(self, vq_embed_dim: int) -> Quantizer:
        return QuantizerSettings.from_config(self.config).build(vq_embed_dim)

    # ----------------------------------------------------------------------------------------------- properties

    @property
    def downsample_factor(self) -> int:
        """Image pixels per code along each side."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    @property
    def codebook_size(self) -> int:
        return self.quantize.codebook_size

    @property
    def code_depth(self) -> int:
        """Codes per position: the residual quantizer's depth, else 1 (codes `(B, h, w)`, no depth axis)."""
        return quantizer_code_depth(self.quantize)

    def code_grid_size(self, height: int, width: int) -> tuple[int, int]:
        """The `(h, w)` code grid of an image of `height × width` pixels."""
        return height // self.downsample_factor, width // self.downsample_factor

    # ----------------------------------------------------------------------------------------------- diffusers API

    @apply_forward_hook
    def encode(self, x: torch.Tensor, return_dict: bool = True) -> VQEncoderOutput | tuple[torch.Tensor]:
        """Images → pre-quantization latents `(B, vq_embed_dim, h, w)`, as diffusers' `VQModel.encode`."""
        x = self.prepare_images(x)
        latents = self.quant_conv(self.encoder(x))
        if not return_dict:
            return (latents,)
        return VQEncoderOutput(latents=latents)

    @apply_forward_hook
    def decode(
        self, h: torch.Tensor, force_not_quantize: bool = False, return_dict: bool = True
    ) -> DecoderOutput | tuple[torch.Tensor, torch.Tensor]:
        """Latents → images, as diffusers' `VQModel.decode`: quantizes `h` first unless `force_not_quantize`.

        An integer tensor `(B, h, w)` (`(B, depth, h, w)` for a residual quantizer) is taken as codes and looked up
        in the codebook.
        """
        if not h.dtype.is_floating_point:
            quantized = self.quantize.codes_to_latents(h)
            commit_loss = torch.zeros((), device=h.device)
        elif force_not_quantize:
            quantized = h
            commit_loss = torch.zeros((), device=h.device)
        else:
            quantizer_output = self.quantize(h)
            quantized = quantizer_output.quantized
            commit_loss = quantizer_output.commitment_loss
        sample = self._decode_quantized(quantized)
        if not return_dict:
            return sample, commit_loss
        return DecoderOutput(sample=sample, commit_loss=commit_loss)

    def forward(self, sample: torch.Tensor, return_dict: bool = True) -> VQVAEModelOutput | tuple:
        """Reconstruct `sample` and report the quantizer's losses and codebook statistics."""
        latents = self.encode(sample).latents
        quantizer_output = self.quantize(latents)
        reconstruction = self._decode_quantized(quantizer_output.quantized)
        output = VQVAEModelOutput(
            sample=reconstruction,
            codes=quantizer_output.codes,
            codebook_loss=quantizer_output.codebook_loss,
            commitment_loss=quantizer_output.commitment_loss,
            auxiliary_loss=quantizer_output.auxiliary_loss,
            perplexity=quantizer_output.perplexity,
            codebook_usage=quantizer_output.codebook_usage,
            depth_perplexity=getattr(quantizer_output, "depth_perplexity", None),
            depth_codebook_usage=getattr(quantizer_output, "depth_codebook_usage", None),
        )
        return output if return_dict else output.to_tuple()

    # ----------------------------------------------------------------------------------------------- token API

    @torch.no_grad()
    def tokenize(self, images: torch.Tensor) -> torch.LongTensor:
        """Images `(B, in_channels, H, W)` in [-1, 1] → codes `(B, H/f, W/f)`, f the downsampling factor; codes
        `(B, depth, H/f, W/f)` for a residual quantizer."""
        return self.quantize.latents_to_codes(self.encode(images).latents)

    def detokenize(self, codes: torch.LongTensor, depths: int | None = None) -> torch.Tensor:
        """Codes `(B, h, w)` (`(B, depth, h, w)` for a residual quantizer) → images `(B, out_channels, h·f, w·f)` in
        roughly [-1, 1]. `depths` (residual quantizer only) decodes the first `depths` depths alone: RQ-VAE's
        coarse-to-fine reconstructions."""
        if depths is None:
            return self._decode_quantized(self.quantize.codes_to_latents(codes))
        if not isinstance(self.quantize, ResidualQuantizer):
            raise ValueError(f"`depths` is for a residual quantizer, not quantizer_type={self.config.quantizer_type!r}")
        return self._decode_quantized(self.quantize.partial_codes_to_latents(codes, depths))

    # ----------------------------------------------------------------------------------------------- internals

    def _decode_quantized(self, quantized: torch.Tensor) -> torch.Tensor:
        quantized = quantized.to(self.decoder.conv_in.weight.dtype)
        hidden = self.post_quant_conv(quantized)
        return self.decoder(hidden, quantized if self.config.norm_type == "spatial" else None)
