"""Priors that attend to a text encoder by cross-attention (Parti's decoder, MUSE's denoiser), as stock transformers
models: GPT-2 with `add_cross_attention`, BERT with `add_cross_attention`.

Two facts of transformers shape this module. Cross-attention keys and values are projections of the encoder's
states of the prior's own width, so the text encoder's hidden size must equal the prior's (`hidden_size` is taken
from the encoder). And BERT builds cross-attention layers only into a decoder (`is_decoder=True`), whose self-attention
is causal; a denoiser must see the whole grid, so it is given a full 4-D attention mask, which transformers uses as
given (`bidirectional_attention_mask`): self-attention stays bidirectional (a test pins it).
"""

import torch
from transformers import PretrainedConfig

from .priors import autoregressive_prior_config, denoiser_config
from .vq_model import VQVAEModel


def text_hidden_size(text_encoder_config: PretrainedConfig) -> int:
    """The width of a text encoder's states (`hidden_size`; T5 maps it to `d_model`)."""
    size = getattr(text_encoder_config, "hidden_size", None) or getattr(text_encoder_config, "d_model", None)
    if not isinstance(size, int):
        raise ValueError(f"the text encoder's config ({type(text_encoder_config).__name__}) records no hidden_size")
    return size


def cross_attention_prior_config(
    vqvae: VQVAEModel, text_encoder_config: PretrainedConfig, num_layers: int = 8, num_heads: int = 8, **overrides
) -> PretrainedConfig:
    """A causal-LM config (GPT-2 by default) over `[BOS, codes]` whose layers cross-attend to the text encoder's
    states (Parti style); its width is the encoder's. `overrides` as in `autoregressive_prior_config`."""
    return autoregressive_prior_config(vqvae, hidden_size=text_hidden_size(text_encoder_config), num_layers=num_layers,
                                       num_heads=num_heads, add_cross_attention=True, **overrides)  # fmt: skip


def cross_attention_denoiser_config(
    vqvae: VQVAEModel, text_encoder_config: PretrainedConfig, num_layers: int = 8, num_heads: int = 8, **overrides
) -> PretrainedConfig:
    """A masked-LM config (BERT by default) over `[BOS, x_t]` whose layers cross-attend to the text encoder's states
    (MUSE style); its width is the encoder's. `is_decoder=True` only makes transformers build the cross-attention
    layers: the pipelines and the training script pass `bidirectional_attention_mask`."""
    return denoiser_config(vqvae, hidden_size=text_hidden_size(text_encoder_config), num_layers=num_layers,
                           num_heads=num_heads, is_decoder=True, add_cross_attention=True, **overrides)  # fmt: skip


def attends_by_cross_attention(config: PretrainedConfig) -> bool:
    """Whether a prior built from `config` has cross-attention layers (to a text encoder)."""
    return bool(getattr(config, "add_cross_attention", False))


def bidirectional_attention_mask(attention_mask: torch.Tensor, config: PretrainedConfig) -> torch.Tensor:
    """A `(B, L)` padding mask as the self-attention mask of a denoiser: unchanged for an encoder model; for one built
    as a decoder (see the module docstring), `(B, 1, L, L)` booleans letting every position see every unpadded one."""
    if not getattr(config, "is_decoder", False):
        return attention_mask
    length = attention_mask.shape[1]
    return attention_mask.bool()[:, None, None, :].expand(-1, 1, length, -1)
