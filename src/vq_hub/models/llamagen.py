"""`LlamaGenForCausalLM`: transformers' Llama with LlamaGen's 2-D rotary positions, the prior of LlamaGen's
class-conditional GPTs (FoundationVision/LlamaGen, `autoregressive/models/gpt.py`; MIT licence).

Why not stock `LlamaForCausalLM`: everything in a LlamaGen block is Llama's (RMSNorm, SwiGLU, no biases, grouped
key/value heads, causal SDPA), but its rotary embedding is not expressible by Llama's `position_ids`, which rotate every
frequency by one scalar position:

- a code at grid cell (r, c) rotates the first half of each head's frequency pairs by r·θ_i and the second half by
  c·θ_i, with θ_i = base^(−2i / (head_dim/2)) — two positions per token;
- the condition token(s) before the first code get cos = sin = 0: their queries and keys are zero vectors (they are
  attended to with score 0 and attend uniformly), which no rotation can give.

So this class is `LlamaForCausalLM` with one module replaced: `LlamaGenRotaryEmbedding` looks cos/sin up in a table
indexed by the token's position (what `LlamaModel` passes it, from the KV cache: the dynamic, static and CUDA-graph
sampling paths alike). LlamaGen rotates interleaved pairs (x₂ᵢ, x₂ᵢ₊₁); Llama's `rotate_half` pairs (xᵢ, xᵢ₊D/2):
the converter permutes the query and key projections' rows once, as transformers' own Llama conversion does, so
attention is unchanged and every layer but the rotary table is transformers' own.
"""

import torch
from torch import nn
from transformers import (
    AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, LlamaModel, LlamaPreTrainedModel,
)  # fmt: skip

from .priors import CodeVocabulary


class LlamaGenConfig(LlamaConfig):
    """A `LlamaConfig` under its own `model_type` ("llamagen"), so that the Auto classes and saved folders build a
    `LlamaGenForCausalLM`. The code grid and the tokens before the first code come from vq_hub's vocabulary keys
    (`code_grid_size`, `prefix_length`); `rope_parameters["rope_theta"]` is LlamaGen's `rope_base`."""

    model_type = "llamagen"


def llamagen_rotary_table(
    grid: tuple[int, int], head_dim: int, base: float, condition_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(cos, sin)`, each `(condition_length + h·w, head_dim)` in `rotate_half` layout: zero for the condition
    tokens, then one row per grid cell in raster order (LlamaGen's `precompute_freqs_cis_2d`, same float32 ops)."""
    if head_dim % 4:
        raise ValueError(f"2-D rotary positions need a head dimension divisible by 4, got {head_dim}")
    half = head_dim // 2
    frequencies = 1.0 / (base ** (torch.arange(0, half, 2)[: half // 2].float() / half))
    height, width = grid
    rows = torch.outer(torch.arange(height), frequencies)  # (h, head_dim/4)
    columns = torch.outer(torch.arange(width), frequencies)  # (w, head_dim/4)
    angles = torch.cat([rows[:, None, :].expand(-1, width, -1), columns[None, :, :].expand(height, -1, -1)], dim=-1)
    angles = angles.flatten(0, 1)  # (h·w, head_dim/2): one angle per pair
    condition = torch.zeros(condition_length, head_dim)
    cos = torch.cat([condition, torch.cos(angles).repeat(1, 2)])
    sin = torch.cat([condition, torch.sin(angles).repeat(1, 2)])
    return cos, sin


def rotary_table_of(config: LlamaConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The rotary table a config implies (its code grid, head size, rope base and tokens before the first code)."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    condition_length = CodeVocabulary.from_config(config).condition_length
    base = config.rope_parameters["rope_theta"]
    return llamagen_rotary_table(tuple(config.code_grid_size), head_dim, base, condition_length)


class LlamaGenRotaryEmbedding(nn.Module):
    """`LlamaRotaryEmbedding`'s interface (`forward(x, position_ids) -> (cos, sin)`) over LlamaGen's 2-D table."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        cos, sin = rotary_table_of(config)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, x: torch.Tensor, position_ids: torch.LongTensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos[position_ids].to(x.dtype), self.sin[position_ids].to(x.dtype)


class LlamaGenModel(LlamaModel):
    """`LlamaModel` with `LlamaGenRotaryEmbedding` in place of Llama's rotary embedding."""

    config_class = LlamaGenConfig

    def __init__(self, config: LlamaGenConfig):
        super().__init__(config)
        self.rotary_emb = LlamaGenRotaryEmbedding(config)

    def _init_weights(self, module: nn.Module) -> None:
        # `from_pretrained` builds the model on the meta device: the table, not a weight, is computed again here.
        super()._init_weights(module)
        if isinstance(module, LlamaGenRotaryEmbedding):
            cos, sin = rotary_table_of(self.config)
            with torch.no_grad():
                module.cos.copy_(cos)
                module.sin.copy_(sin)


class LlamaGenForCausalLM(LlamaForCausalLM):
    """LlamaGen's GPT as a transformers causal LM over vq_hub's code vocabulary (see the module docstring): Llama
    blocks, LlamaGen's 2-D rotary positions, KV caches and `generate()` from transformers."""

    config_class = LlamaGenConfig

    def __init__(self, config: LlamaGenConfig):
        # LlamaForCausalLM.__init__ with LlamaGenModel as `model` (calling it would build a LlamaModel first).
        LlamaPreTrainedModel.__init__(self, config)
        self.model = LlamaGenModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()


AutoConfig.register(LlamaGenConfig.model_type, LlamaGenConfig)
AutoModelForCausalLM.register(LlamaGenConfig, LlamaGenForCausalLM)

__all__ = ["LlamaGenConfig", "LlamaGenForCausalLM", "LlamaGenModel", "llamagen_rotary_table"]
