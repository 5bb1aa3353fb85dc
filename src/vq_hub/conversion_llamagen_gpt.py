"""LlamaGen's class-conditional GPT (FoundationVision/LlamaGen, `autoregressive/models/gpt.py`; MIT licence) as the
prior of a `VQAutoregressivePipeline`: a `LlamaGenForCausalLM` (transformers' Llama with LlamaGen's 2-D rotary
positions; `models/llamagen.py` says why stock `LlamaForCausalLM` cannot express it). The script
`conversion/convert_llamagen_gpt.py` and `vq-hub convert llamagen-gpt` are thin wrappers around these functions.

What maps to what (LlamaGen → vq_hub):

- `tok_embeddings` (K codes) and `cls_embedding.embedding_table` (C classes, then the null class of classifier-free
  guidance) → one embedding over vq_hub's vocabulary (`CodeVocabulary`): codes 0…K−1, the null class at K (vq_hub's
  BOS, which is its null class), classes at K+1…K+C, and a zero PAD row LlamaGen does not have. The class token is the
  first token of a sequence in both (LlamaGen's `cls_token_num` = 1 for c2i), at position 0, where both rotary tables
  are zero.
- `output` (K logits) → the first K rows of `lm_head`; the rows of the special tokens are zero, and vq_hub's samplers
  only ever pick among the first K logits, so no special token is sampled.
- per layer: `attention.wqkv` → `q_proj`, `k_proj`, `v_proj` (queries and keys with their rows permuted from
  LlamaGen's interleaved rotary pairs to transformers' `rotate_half` halves), `attention.wo` → `o_proj`,
  `feed_forward.w1/w3/w2` → `mlp.gate_proj/up_proj/down_proj`, `attention_norm`/`ffn_norm` →
  `input_layernorm`/`post_attention_layernorm`; `norm` → `model.norm`.

The checkpoint holds no config. Width, depth, feed-forward size, codebook and classes are read from the weights'
shapes; the number of heads is not in them (LlamaGen's `GPT_models` table gives it by width, or pass it), nor the
code grid (LlamaGen's `block_size` = (image size / 16)², from the image size; an old checkpoint's `freqs_cis` entry,
when present, must agree). `rope_base` 10,000 and `norm_eps` 1e-5 are LlamaGen's defaults, which no released model
changes. Only class-conditional models with one key/value head per head convert (LlamaGen's own KV cache cannot sample
with fewer, and no released model has them); a text-conditional (t2i) checkpoint is refused by name.
"""

import os
import re
from pathlib import Path

import torch

from .conversion import save_converted
from .conversion_llamagen_vq import LLAMAGEN_LICENSE, LLAMAGEN_SOURCE, load_llamagen_state_dict
from .models.llamagen import LlamaGenConfig, LlamaGenForCausalLM, LlamaGenRotaryEmbedding
from .models.priors import CodeVocabulary, _transformer_config
from .models.vq_model import VQVAEModel
from .pipelines import VQAutoregressivePipeline
from .utils.io import write_text_atomically

# The checkpoint entries LlamaGen's sample_c2i.py looks for, in its order (DDP, DeepSpeed, other), then the EMA
# weights its train_c2i.py keeps with --ema; FSDP checkpoints (XXL, 3B) are bare state dicts.
LLAMAGEN_GPT_WEIGHT_KEYS = ("model", "module", "state_dict", "ema")
# Heads by width in LlamaGen's GPT_models (B, L, XL, XXL, XXXL, 1B, 3B, 7B): the weights do not say.
LLAMAGEN_HEADS = {768: 12, 1024: 16, 1280: 20, 1536: 24, 2560: 40, 2048: 32, 3200: 32, 4096: 32}
LLAMAGEN_ROPE_BASE = 10000.0
LLAMAGEN_NORM_EPS = 1e-5
# Older LlamaGen checkpoints carry the rotary table (`freqs_cis`); it is derived, and checked against the grid.
LLAMAGEN_DERIVED = ("freqs_cis",)


# ------------------------------------------------------------------------------------------------- config


def _layer_count(state_dict: dict[str, torch.Tensor]) -> int:
    indices = {int(m.group(1)) for key in state_dict if (m := re.match(r"layers\.(\d+)\.", key))}
    return max(indices) + 1 if indices else 0


def llamagen_gpt_shapes(
    width: int, num_layers: int, ffn_size: int, codebook_size: int, num_classes: int
) -> dict[str, tuple[int, ...]]:
    """Every weight of a LlamaGen c2i `Transformer` (with the null class) and its shape."""
    shapes = {
        "tok_embeddings.weight": (codebook_size, width),
        "cls_embedding.embedding_table.weight": (num_classes + 1, width),
        "norm.weight": (width,),
        "output.weight": (codebook_size, width),
    }
    for i in range(num_layers):
        prefix = f"layers.{i}."
        shapes.update({
            prefix + "attention.wqkv.weight": (3 * width, width), prefix + "attention.wo.weight": (width, width),
            prefix + "feed_forward.w1.weight": (ffn_size, width), prefix + "feed_forward.w3.weight": (ffn_size, width),
            prefix + "feed_forward.w2.weight": (width, ffn_size),
            prefix + "attention_norm.weight": (width,), prefix + "ffn_norm.weight": (width,),
        })  # fmt: skip
    return shapes


def _check_layout(state_dict: dict[str, torch.Tensor]) -> tuple[int, int, int, int, int]:
    """`(width, layers, ffn size, codebook size, classes)` read from the weights, every key and shape checked."""
    if "cls_embedding.cap_proj.fc1.weight" in state_dict:
        raise ValueError("this is a text-conditional (t2i) LlamaGen GPT; only class-conditional (c2i) ones convert")
    for key in ("tok_embeddings.weight", "cls_embedding.embedding_table.weight", "layers.0.feed_forward.w1.weight"):
        if key not in state_dict:
            raise ValueError(f"the LlamaGen checkpoint lacks {key}, which every LlamaGen c2i GPT has")
    codebook_size, width = state_dict["tok_embeddings.weight"].shape
    num_classes = state_dict["cls_embedding.embedding_table.weight"].shape[0] - 1
    ffn_size = state_dict["layers.0.feed_forward.w1.weight"].shape[0]
    qkv = state_dict.get("layers.0.attention.wqkv.weight")
    if qkv is not None and qkv.shape[0] != 3 * width:
        raise ValueError(f"layers.0.attention.wqkv.weight has {qkv.shape[0]} rows, not 3 × {width}: grouped "
                         "key/value heads (n_kv_head < n_head), which LlamaGen's own sampler cannot run, are not "
                         "supported")  # fmt: skip
    expected = llamagen_gpt_shapes(width, _layer_count(state_dict), ffn_size, codebook_size, num_classes)
    unknown = sorted(set(state_dict) - set(expected) - set(LLAMAGEN_DERIVED))
    if unknown:
        raise ValueError(f"{len(unknown)} key(s) of the LlamaGen checkpoint are not understood: {unknown[:10]}")
    missing = sorted(set(expected) - set(state_dict))
    if missing:
        raise ValueError(f"the LlamaGen checkpoint lacks {len(missing)} weight(s): {missing[:10]}")
    for key, shape in expected.items():
        if tuple(state_dict[key].shape) != shape:
            raise ValueError(f"{key} has shape {tuple(state_dict[key].shape)}; the other weights imply {shape}")
    return width, _layer_count(state_dict), ffn_size, codebook_size, num_classes


def llamagen_gpt_config(
    state_dict: dict[str, torch.Tensor], grid_size: int = 16, num_heads: int | None = None
) -> LlamaGenConfig:
    """The `LlamaGenConfig` of the LlamaGen c2i GPT the weights belong to, for a `grid_size`² grid of codes
    (LlamaGen's `block_size`; 16 for 256×256 images, 24 for 384×384, with its 16× tokenizers). `num_heads`
    defaults to LlamaGen's own for that width."""
    width, num_layers, ffn_size, codebook_size, num_classes = _check_layout(state_dict)
    if num_heads is None:
        if width not in LLAMAGEN_HEADS:
            raise ValueError(f"width {width} is none of LlamaGen's models ({sorted(LLAMAGEN_HEADS)}): pass num_heads")
        num_heads = LLAMAGEN_HEADS[width]
    if num_heads < 1 or width % num_heads or (width // num_heads) % 4:
        raise ValueError(f"`num_heads` {num_heads} must divide the width {width} into heads of a multiple of 4 "
                         "(2-D rotary positions)")  # fmt: skip
    if grid_size < 1:
        raise ValueError(f"`grid_size` must be positive, got {grid_size}")
    vocabulary = CodeVocabulary(codebook_size, num_classes)
    settings = dict(
        intermediate_size=ffn_size, num_key_value_heads=num_heads, rms_norm_eps=LLAMAGEN_NORM_EPS,
        rope_parameters={"rope_type": "default", "rope_theta": LLAMAGEN_ROPE_BASE}, hidden_act="silu",
        attention_bias=False, mlp_bias=False, tie_word_embeddings=False,
    )  # fmt: skip
    config = _transformer_config(LlamaGenConfig.model_type, vocabulary, (grid_size, grid_size), width, num_layers,
                                 num_heads, settings, {})  # fmt: skip
    _check_stored_rotary_table(state_dict, config)
    return config


def _check_stored_rotary_table(state_dict: dict[str, torch.Tensor], config: LlamaGenConfig) -> None:
    stored = state_dict.get("freqs_cis")
    if stored is None:
        return
    table = LlamaGenRotaryEmbedding(config)
    half = config.head_dim // 2
    ours = torch.stack([table.cos[:, :half], table.sin[:, :half]], dim=-1)
    if stored.shape != ours.shape or not torch.allclose(stored.float(), ours, atol=1e-5):
        positions = stored.shape[0] if stored.ndim == 3 else "?"
        raise ValueError(f"the checkpoint's freqs_cis (rotary table) holds {positions} positions, not the "
                         f"{ours.shape[0]} of a {config.code_grid_size[0]}² grid: give the image size (grid) the "
                         "model was trained for")  # fmt: skip


# ------------------------------------------------------------------------------------------------- weights


def interleaved_to_half_rotary(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Rows of a query/key projection reordered per head from LlamaGen's rotary pairs (x₂ᵢ, x₂ᵢ₊₁) to
    transformers' (xᵢ, xᵢ₊D/2): the same attention scores under `rotate_half`."""
    rows, columns = weight.shape
    return weight.view(num_heads, rows // num_heads // 2, 2, columns).transpose(1, 2).reshape(rows, columns)


def llamagen_state_dict_to_prior(
    state_dict: dict[str, torch.Tensor], config: LlamaGenConfig
) -> dict[str, torch.Tensor]:
    """LlamaGen GPT weights (checked by `llamagen_gpt_config`) as a `LlamaGenForCausalLM` state dict, in float32."""
    vocabulary = CodeVocabulary.from_config(config)
    weights = {key: value.float() for key, value in state_dict.items() if key not in LLAMAGEN_DERIVED}
    codes, classes = vocabulary.codebook_size, vocabulary.num_classes
    embedding = weights["tok_embeddings.weight"].new_zeros(vocabulary.vocab_size, config.hidden_size)
    class_table = weights["cls_embedding.embedding_table.weight"]
    embedding[:codes] = weights["tok_embeddings.weight"]
    embedding[vocabulary.null_class_token_id] = class_table[classes]  # LlamaGen's null class is its last row
    embedding[codes + 1 : codes + 1 + classes] = class_table[:classes]
    head = torch.zeros_like(embedding)
    head[:codes] = weights["output.weight"]
    converted = {"model.embed_tokens.weight": embedding, "lm_head.weight": head,
                 "model.norm.weight": weights["norm.weight"]}  # fmt: skip
    heads = config.num_attention_heads
    for i in range(config.num_hidden_layers):
        theirs, ours = f"layers.{i}.", f"model.layers.{i}."
        query, key, value = weights[theirs + "attention.wqkv.weight"].chunk(3)
        converted.update({
            ours + "self_attn.q_proj.weight": interleaved_to_half_rotary(query, heads),
            ours + "self_attn.k_proj.weight": interleaved_to_half_rotary(key, heads),
            ours + "self_attn.v_proj.weight": value,
            ours + "self_attn.o_proj.weight": weights[theirs + "attention.wo.weight"],
            ours + "mlp.gate_proj.weight": weights[theirs + "feed_forward.w1.weight"],
            ours + "mlp.up_proj.weight": weights[theirs + "feed_forward.w3.weight"],
            ours + "mlp.down_proj.weight": weights[theirs + "feed_forward.w2.weight"],
            ours + "input_layernorm.weight": weights[theirs + "attention_norm.weight"],
            ours + "post_attention_layernorm.weight": weights[theirs + "ffn_norm.weight"],
        })  # fmt: skip
    return {key: value.contiguous() for key, value in converted.items()}


def convert_llamagen_gpt(
    checkpoint: str | os.PathLike,
    grid_size: int = 16,
    num_heads: int | None = None,
    weights: str | None = None,
    allow_pickle: bool = False,
) -> LlamaGenForCausalLM:
    """A LlamaGen c2i GPT checkpoint (e.g. `c2i_B_256.pt`, `c2i_L_384.pt`) as a `LlamaGenForCausalLM` in float32
    (eval mode) with LlamaGen's logits, over a `grid_size`² grid (16 for the `_256` models, 24 for `_384`).

    `weights`: the checkpoint entry to take (`"model"`, `"module"`, `"state_dict"`, `"ema"`; default LlamaGen's
    order); `num_heads`: only for a width none of LlamaGen's models has. Loaded with `weights_only=True` unless
    `allow_pickle` (only for files you trust)."""
    state_dict = load_llamagen_state_dict(checkpoint, weights=weights, allow_pickle=allow_pickle,
                                          entries=LLAMAGEN_GPT_WEIGHT_KEYS)  # fmt: skip
    config = llamagen_gpt_config(state_dict, grid_size=grid_size, num_heads=num_heads)
    converted = llamagen_state_dict_to_prior(state_dict, config)
    with torch.device("meta"):  # no random initialisation of weights about to be replaced
        model = LlamaGenForCausalLM(config)
    model.load_state_dict(converted, strict=True, assign=True)
    model.model.rotary_emb = LlamaGenRotaryEmbedding(config)  # a table computed from the config, not weights
    return model.eval()


# ------------------------------------------------------------------------------------------------- pipeline, card


def assemble_llamagen_pipeline(prior: LlamaGenForCausalLM, vqvae: VQVAEModel) -> VQAutoregressivePipeline:
    """A `VQAutoregressivePipeline` of a converted prior and its converted LlamaGen tokenizer (`vq-hub convert
    llamagen-vq`), after checking that their codebooks agree."""
    if vqvae.codebook_size != prior.config.codebook_size:
        raise ValueError(f"the tokenizer has {vqvae.codebook_size} codes, the GPT models "
                         f"{prior.config.codebook_size}: they are not a pair")  # fmt: skip
    return VQAutoregressivePipeline(vqvae=vqvae, prior=prior)


def convert_llamagen_gpt_to_folder(
    checkpoint: str | os.PathLike,
    destination: str | os.PathLike,
    command: str,
    tokenizer: str | os.PathLike | None = None,
    image_size: int = 256,
    num_heads: int | None = None,
    weights: str | None = None,
    allow_pickle: bool = False,
) -> LlamaGenForCausalLM | VQAutoregressivePipeline:
    """What the script and `vq-hub convert llamagen-gpt` do: convert the GPT for `image_size` images (its grid is
    `image_size` / the tokenizer's downsampling, 16 for LlamaGen's c2i tokenizers) and save it — with the converted
    `tokenizer` folder, when given, as a whole pipeline — with its card. Returns what was saved."""
    vqvae = None if tokenizer is None else VQVAEModel.from_pretrained(tokenizer).eval()
    factor = 16 if vqvae is None else vqvae.downsample_factor
    if image_size < factor or image_size % factor:
        raise ValueError(f"`image_size` {image_size} must be a positive multiple of the tokenizer's downsampling "
                         f"({factor})")  # fmt: skip
    prior = convert_llamagen_gpt(checkpoint, image_size // factor, num_heads=num_heads, weights=weights,
                                 allow_pickle=allow_pickle)  # fmt: skip
    converted = prior if vqvae is None else assemble_llamagen_pipeline(prior, vqvae)
    save_converted_llamagen_gpt(converted, destination, str(checkpoint), command)
    return converted


def describe_converted(converted: LlamaGenForCausalLM | VQAutoregressivePipeline) -> str:
    """One line saying what a conversion made, for the script and the command."""
    prior = converted if isinstance(converted, LlamaGenForCausalLM) else converted.prior
    config = prior.config
    grid = "×".join(map(str, config.code_grid_size))
    what = "a LlamaGenForCausalLM" if prior is converted else "a VQAutoregressivePipeline (tokenizer and GPT)"
    return (f"{what}: {sum(p.numel() for p in prior.parameters()):,} parameters, {grid} grids of "
            f"{config.codebook_size} codes, {config.num_classes} classes")


CONVERTED_PRIOR_CARD = """---
library_name: vq_hub
license: {license}
tags:
- vq_hub
- llamagen
- autoregressive
- class-conditional
---

# {title}

LlamaGen's class-conditional GPT `{checkpoint}` ({parameters:,} parameters: {layers} layers of width {width},
{heads} heads), converted to a vq_hub `LlamaGenForCausalLM`{contents}. It samples {grid}×{grid} grids of codes from a
codebook of {codebook_size}, conditioned on one of {num_classes} classes (classifier-free guidance against LlamaGen's
null class). The weights are the source's in float32; only their names and layout differ (query/key rows permuted to
transformers' rotary layout, the class and code embeddings joined into one table over vq_hub's vocabulary).

- Source: {source_url} (licence: MIT — LlamaGen licenses the project under MIT and names no other licence for
  its released weights).
- Converted with: `{command}`
- Proof of equality: vq_hub's `tests/test_conversion_llamagen_gpt.py` converts a GPT made by LlamaGen's own code
  (random weights) and finds LlamaGen's logits and its greedy samples, with and without guidance.

```python
{snippet}
```
"""

PIPELINE_SNIPPET = """import torch
from vq_hub import VQPipeline

pipe = VQPipeline.from_pretrained("{folder}").to("cuda")
pipe.cuda_graphs = True   # each code's step recorded once and replayed
images = pipe(class_labels=[207], guidance_scale=4.0, top_k=2000,   # LlamaGen's sampling defaults
              generator=torch.Generator("cuda").manual_seed(0)).images"""

PRIOR_SNIPPET = """from vq_hub import LlamaGenForCausalLM, VQAutoregressivePipeline, VQVAEModel

prior = LlamaGenForCausalLM.from_pretrained("{folder}")
pipe = VQAutoregressivePipeline(vqvae=VQVAEModel.from_pretrained("llamagen-vq-ds16-c2i"), prior=prior)"""


def save_converted_llamagen_gpt(
    converted, destination: str | os.PathLike, checkpoint: str, command: str
) -> Path:
    """Write a converted prior (`LlamaGenForCausalLM`) or a whole pipeline (`assemble_llamagen_pipeline`) to
    `destination`, with `conversion.json` (source, licence, command) and a model card naming them."""
    destination = Path(destination)
    is_pipeline = not isinstance(converted, LlamaGenForCausalLM)
    prior = converted.prior if is_pipeline else converted
    save_converted(converted, destination, str(checkpoint),
                   {"source": LLAMAGEN_SOURCE, "license": LLAMAGEN_LICENSE, "command": command})  # fmt: skip
    config = prior.config
    snippet = (PIPELINE_SNIPPET if is_pipeline else PRIOR_SNIPPET).format(folder=destination.name)
    card = CONVERTED_PRIOR_CARD.format(
        license=LLAMAGEN_LICENSE, title=f"LlamaGen {Path(checkpoint).stem} (vq_hub)", checkpoint=Path(checkpoint).name,
        parameters=sum(p.numel() for p in prior.parameters()), layers=config.num_hidden_layers,
        width=config.hidden_size, heads=config.num_attention_heads,
        contents=" with its tokenizer, as a `VQAutoregressivePipeline`" if is_pipeline else "",
        grid=config.code_grid_size[0], codebook_size=config.codebook_size, num_classes=config.num_classes,
        source_url=LLAMAGEN_SOURCE, command=command, snippet=snippet,
    )  # fmt: skip
    write_text_atomically(destination / "README.md", card)
    return destination


__all__ = [
    "assemble_llamagen_pipeline", "convert_llamagen_gpt", "convert_llamagen_gpt_to_folder", "describe_converted",
    "interleaved_to_half_rotary", "llamagen_gpt_config", "llamagen_gpt_shapes", "llamagen_state_dict_to_prior",
    "save_converted_llamagen_gpt",
]  # fmt: skip
