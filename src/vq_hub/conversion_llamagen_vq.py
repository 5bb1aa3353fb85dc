"""LlamaGen's VQ tokenizer (FoundationVision/LlamaGen, `tokenizer/tokenizer_image/vq_model.py`; MIT licence) as a
vq_hub `VQVAEModel`. The script `conversion/convert_llamagen_vq.py` is a thin wrapper around these functions.

LlamaGen's `VQModel` is taming's encoder/decoder with a different module layout, a `quant_conv` straight down to
`codebook_embed_dim` (8) channels and a `VectorQuantizer` that compares l2-normalised latents with l2-normalised codes
(`codebook_l2_norm=True`, the released tokenizers). Every part has an exact counterpart in `VQVAEModel`:

- encoder/decoder: diffusers' `Encoder`/`Decoder` (GroupNorm of 32 groups, eps 1e-6, SiLU, one-head attention scaled
  by 1/√C, downsampling by a (0,1,0,1)-padded stride-2 convolution, nearest ×2 upsampling then a convolution);
  LlamaGen puts attention after every residual block of the lowest-resolution level (`AttnDownEncoderBlock2D`, and
  `AttnUpDecoderBlock2D` first in the decoder) and in the middle block;
- `quant_conv` / `post_quant_conv`: ours with `vq_embed_dim = codebook_embed_dim`;
- the quantizer: ours with `use_l2_norm=True` and no projection (`codebook_dim` = `vq_embed_dim`). LlamaGen takes the
  `argmin` of `||z||² + ||e||² − 2 z·e` over unit vectors, i.e. the largest cosine; ours takes the largest `z·e`
  over the same unit vectors, ties to the lowest index in both. LlamaGen's losses are ours with β on the commitment
  term (`legacy_beta=False`); its optional entropy loss (`entropy_loss_ratio`, 0 by default) has no counterpart and
  matters only for further training.

The checkpoint holds no config: channels, levels, residual blocks, attention levels, latent channels and the codebook
are read from the weights' shapes. Only `codebook_l2_norm` is invisible in the weights (it is an argument, True as in
every released LlamaGen tokenizer) and the training resolution (`sample_size`, recorded in the config only).
"""

import argparse
import os
import re
from pathlib import Path

import torch

from .conversion import _ATTENTION, _RESNET, _fill_from_fresh_model, attention_projection_as_linear, save_converted
from .models.vq_model import VQVAEModel
from .utils.io import write_text_atomically

LLAMAGEN_SOURCE = "https://github.com/FoundationVision/LlamaGen"
LLAMAGEN_LICENSE = "mit"
# What LlamaGen's own loaders look for, in their order (tokenizer/tokenizer_image/vq_demo.py,
# reconstruction_vq_ddp.py): the EMA weights when the training kept them, else the model's, else a Lightning-style key.
LLAMAGEN_WEIGHT_KEYS = ("ema", "model", "state_dict")
# LlamaGen's quantizer keeps the last 65,536 chosen codes to report usage while training; it is not a weight.
LLAMAGEN_STATISTICS = ("quantize.codebook_used",)


# ------------------------------------------------------------------------------------------------- loading


def load_llamagen_state_dict(
    checkpoint: str | os.PathLike, weights: str | None = None, allow_pickle: bool = False,
    entries: tuple[str, ...] = LLAMAGEN_WEIGHT_KEYS,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """The tokenizer weights of a LlamaGen checkpoint: a `torch.save`d dict (`{"model": …}` as released, plus
    `"ema"`, `"optimizer"`, `"args"`, … when written by LlamaGen's `vq_train.py`), a bare state dict, or a
    `.safetensors` file (LlamaGen's `VQModelHF.save_pretrained`).

    `weights` names the entry to take (one of `entries`: `"ema"`, `"model"` or `"state_dict"` for a tokenizer); by
    default the first present of `entries`, in their order (LlamaGen's loaders' own order). Loaded with `torch.load(weights_only=True)`, which never runs pickled code; the
    `argparse.Namespace` LlamaGen's training checkpoints pickle under `"args"` is allowed (it only holds values).
    Anything else pickled is refused unless `allow_pickle=True` — only for files you trust.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"`checkpoint` {str(path)!r} is not a file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        payload = load_file(path)
    else:
        try:
            with torch.serialization.safe_globals([argparse.Namespace]):
                payload = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
        except Exception as error:
            if allow_pickle:
                raise
            raise ValueError(
                f"{path} cannot be loaded with weights_only=True: it pickles more than tensors ({type(error).__name__};"
                " the cause is chained below). If you trust the file, pass allow_pickle=True (--allow_pickle), which "
                "runs the code pickled in it."
            ) from error
    if not isinstance(payload, dict):
        raise ValueError(f"{path} holds a {type(payload).__name__}, not a dict of weights")
    if weights is not None and weights not in entries:
        raise ValueError(f"`weights` must be one of {entries} or None, got {weights!r}")
    if weights is not None:
        if weights not in payload:
            raise ValueError(f"{path} has no {weights!r} entry; its entries: {sorted(payload)[:10]}")
        state_dict = payload[weights]
    else:
        found = [key for key in entries if isinstance(payload.get(key), dict)]
        state_dict = payload[found[0]] if found else payload
    if not isinstance(state_dict, dict) or not state_dict or not all(
        isinstance(value, torch.Tensor) for value in state_dict.values()
    ):
        raise ValueError(f"{path} holds no state dict of tensors (looked for {entries} or a bare one)")
    return state_dict


# ------------------------------------------------------------------------------------------------- config


def _levels(state_dict: dict[str, torch.Tensor], part: str) -> list[int]:
    return sorted({int(m.group(1)) for key in state_dict if (m := re.match(rf"{part}\.conv_blocks\.(\d+)\.", key))})


def _count(state_dict: dict[str, torch.Tensor], prefix: str) -> int:
    """How many numbered submodules `prefix.<j>.` the weights hold."""
    pattern = re.compile(rf"{re.escape(prefix)}\.(\d+)\.")
    return len({m.group(1) for key in state_dict if (m := pattern.match(key))})


def _shape(state_dict: dict[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state_dict:
        raise ValueError(f"the LlamaGen checkpoint lacks {key}, which every LlamaGen VQModel has")
    return tuple(state_dict[key].shape)


def llamagen_to_vq_config(
    state_dict: dict[str, torch.Tensor], codebook_l2_norm: bool = True, sample_size: int = 256
) -> dict:
    """A vq_hub `VQVAEModel` config equivalent to the LlamaGen `VQModel` the weights belong to (read from shapes)."""
    ch, in_channels = _shape(state_dict, "encoder.conv_in.weight")[:2]
    levels = _levels(state_dict, "encoder")
    if not levels or levels != list(range(len(levels))) or _levels(state_dict, "decoder") != levels:
        raise ValueError(
            f"encoder levels {levels} and decoder levels {_levels(state_dict, 'decoder')} must both be 0…N−1"
        )
    num_res_blocks = _count(state_dict, "encoder.conv_blocks.0.res")
    widths = [_shape(state_dict, f"encoder.conv_blocks.{i}.res.0.conv2.weight")[0] for i in levels]
    # The decoder runs its levels from the lowest resolution: its block i has the encoder's level N−1−i width.
    decoder_widths = [_shape(state_dict, f"decoder.conv_blocks.{i}.res.0.conv2.weight")[0] for i in reversed(levels)]
    if decoder_widths != widths:
        raise ValueError(
            f"encoder channels {widths} and decoder channels {decoder_widths} differ (encoder_ch_mult ≠ "
            "decoder_ch_mult): VQVAEModel's decoder mirrors its encoder"
        )
    if widths[0] != ch:
        raise ValueError(f"encoder_ch_mult must start with 1 (the first level keeps the {ch} channels of conv_in), "
                         f"got channels {widths}")  # fmt: skip
    for i in levels:
        if _count(state_dict, f"encoder.conv_blocks.{i}.res") != num_res_blocks:
            raise ValueError(f"encoder level {i} has a different number of residual blocks than level 0")
        if _count(state_dict, f"decoder.conv_blocks.{i}.res") != num_res_blocks + 1:
            raise ValueError(f"decoder level {i} must have num_res_blocks + 1 = {num_res_blocks + 1} residual blocks")
    encoder_attention = [_count(state_dict, f"encoder.conv_blocks.{i}.attn") > 0 for i in levels]
    decoder_attention = [_count(state_dict, f"decoder.conv_blocks.{i}.attn") > 0 for i in levels]
    for part in ("encoder", "decoder"):
        if f"{part}.mid.1.q.weight" not in state_dict:
            raise ValueError(f"{part}.mid.1 is not an attention block (LlamaGen's middle is resnet, attention, resnet)")
    z_channels = _shape(state_dict, "encoder.conv_out.weight")[0]
    num_codes, code_dim = _shape(state_dict, "quantize.embedding.weight")
    return dict(
        in_channels=in_channels,
        out_channels=_shape(state_dict, "decoder.conv_out.weight")[0],
        down_block_types=["AttnDownEncoderBlock2D" if a else "DownEncoderBlock2D" for a in encoder_attention],
        up_block_types=["AttnUpDecoderBlock2D" if a else "UpDecoderBlock2D" for a in decoder_attention],
        block_out_channels=widths,
        layers_per_block=num_res_blocks,
        latent_channels=z_channels,
        sample_size=sample_size,
        num_vq_embeddings=num_codes,
        vq_embed_dim=code_dim,
        norm_num_groups=32,  # LlamaGen's Normalize: GroupNorm(num_groups=32, eps=1e-6)
        commitment_beta=0.25,  # LlamaGen's commit_loss_beta (a training setting; not stored in its checkpoints)
        legacy_beta=False,  # LlamaGen puts β on the commitment term, as vq_hub does
        quantizer_recipe="plain",
        codebook_dim=None,  # LlamaGen's quant_conv goes straight to the code dimension: no projection in/out
        use_l2_norm=codebook_l2_norm,
        kmeans_init=False,
        dead_code_threshold=0.0,
    )


# ------------------------------------------------------------------------------------------------- keys


def llamagen_key_to_vq(key: str) -> str | None:
    """One LlamaGen `VQModel` key → ours (None when it is not a tokenizer weight we know)."""
    if key == "quantize.embedding.weight" or re.fullmatch(r"(post_)?quant_conv\.(weight|bias)", key):
        return key
    match = re.fullmatch(r"(encoder|decoder)\.(conv_in|conv_out|norm_out)\.(weight|bias)", key)
    if match:
        name = "conv_norm_out" if match.group(2) == "norm_out" else match.group(2)
        return f"{match.group(1)}.{name}.{match.group(3)}"
    match = re.fullmatch(r"(encoder|decoder)\.mid\.([012])\.(\w+)\.(weight|bias)", key)
    if match:
        part, index, name, kind = match.groups()
        if index == "1":
            return f"{part}.mid_block.attentions.0.{_ATTENTION[name]}.{kind}" if name in _ATTENTION else None
        return f"{part}.mid_block.resnets.{int(index) // 2}.{_RESNET[name]}.{kind}" if name in _RESNET else None
    match = re.fullmatch(r"(encoder|decoder)\.conv_blocks\.(\d+)\.(res|attn|downsample|upsample)\.(.+)", key)
    if not match:
        return None
    part, level, kind, rest = match.groups()
    # LlamaGen's decoder numbers its levels in the order they run, as diffusers does (taming's does not).
    blocks = f"{part}.{'down_blocks' if part == 'encoder' else 'up_blocks'}.{level}"
    if (part, kind) in (("encoder", "downsample"), ("decoder", "upsample")):
        match = re.fullmatch(r"conv\.(weight|bias)", rest)
        return f"{blocks}.{kind}rs.0.conv.{match.group(1)}" if match else None
    match = re.fullmatch(r"(\d+)\.(\w+)\.(weight|bias)", rest)
    if not match:
        return None
    index, name, tensor = match.groups()
    table, modules = (_RESNET, "resnets") if kind == "res" else (_ATTENTION, "attentions")
    return f"{blocks}.{modules}.{index}.{table[name]}.{tensor}" if name in table else None


def llamagen_state_dict_to_vq(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """LlamaGen weights with our keys (its usage record `quantize.codebook_used` set aside); unknown keys raise."""
    converted, unknown = {}, []
    for key, value in state_dict.items():
        if key in LLAMAGEN_STATISTICS:
            continue
        new_key = llamagen_key_to_vq(key)
        if new_key is None:
            unknown.append(key)
            continue
        converted[new_key] = attention_projection_as_linear(new_key, value)
    if unknown:
        raise ValueError(f"{len(unknown)} key(s) of the LlamaGen checkpoint are not understood: {unknown[:10]}")
    return converted


def convert_llamagen_vq(
    checkpoint: str | os.PathLike,
    weights: str | None = None,
    codebook_l2_norm: bool = True,
    sample_size: int = 256,
    allow_pickle: bool = False,
) -> VQVAEModel:
    """A LlamaGen VQ tokenizer checkpoint (e.g. `vq_ds16_c2i.pt`, `vq_ds8_c2i.pt`, `vq_ds16_t2i.pt`) as a vq_hub
    `VQVAEModel` in float32, with the same codes and reconstructions as LlamaGen's `VQModel`.

    `weights`: the checkpoint entry to take (`"ema"`, `"model"`, `"state_dict"`; default LlamaGen's order).
    `codebook_l2_norm`: LlamaGen's `ModelArgs.codebook_l2_norm` (True for every released tokenizer; the weights do not
    say). `sample_size`: the image size recorded in the config (256 for the released c2i tokenizers).
    """
    state_dict = load_llamagen_state_dict(checkpoint, weights=weights, allow_pickle=allow_pickle)
    config = llamagen_to_vq_config(state_dict, codebook_l2_norm=codebook_l2_norm, sample_size=sample_size)
    model = VQVAEModel(**config)
    _fill_from_fresh_model(model, llamagen_state_dict_to_vq(state_dict), f"LlamaGen checkpoint {checkpoint}")
    return model


# ------------------------------------------------------------------------------------------------- model card

CONVERTED_TOKENIZER_CARD = """---
library_name: vq_hub
license: {license}
tags:
- vq_hub
- image-tokenizer
- vector-quantization
- {source_tag}
---

# {title}

{source_name}'s image tokenizer `{checkpoint}`, converted to a vq_hub `{model_class}`: images become grids of codes
from a codebook of {codebook_size} ({code_dim}-d{normalised}), one code per {factor}×{factor} pixels.
{weights_note}

- Source: {source_url} (licence: {license_name}, which applies to these weights).
- Converted with: `{command}`
- Proof of equality: vq_hub's `{proof}` converts a checkpoint made by the source's own code (random weights) and
  finds the same codes and reconstructions.

```python
import torch
from vq_hub import {model_class}

model = {model_class}.from_pretrained("{folder}").eval()
images = torch.rand(1, 3, {size}, {size}) * 2 - 1   # pixels in [-1, 1]
codes = model.tokenize(images)                  # LongTensor (1, {grid}, {grid})
reconstruction = model.detokenize(codes)
```
"""


def write_converted_tokenizer_card(
    model: VQVAEModel, folder: str | os.PathLike, checkpoint: str, command: str, title: str | None = None
) -> Path:
    """`README.md` for a converted LlamaGen tokenizer: source, licence (MIT), the conversion command, the proof."""
    folder = Path(folder)
    size = model.config.sample_size
    card = CONVERTED_TOKENIZER_CARD.format(
        model_class="VQVAEModel", license=LLAMAGEN_LICENSE, license_name="MIT", source_tag="llamagen", source_name="LlamaGen",
        title=title or f"LlamaGen VQ tokenizer {Path(checkpoint).stem} (vq_hub)", checkpoint=Path(checkpoint).name,
        codebook_size=model.codebook_size, code_dim=model.config.vq_embed_dim,
        normalised=", l2-normalised" if model.config.use_l2_norm else "", factor=model.downsample_factor,
        source_url=LLAMAGEN_SOURCE, command=command, proof="tests/test_conversion_llamagen_vq.py",
        folder=folder.name, size=size, grid=size // model.downsample_factor,
        weights_note="The weights are the source's, unchanged; only their names and layout differ.",
    )  # fmt: skip
    return write_text_atomically(folder / "README.md", card)


def save_converted_llamagen_vq(
    model: VQVAEModel, destination: str | os.PathLike, checkpoint: str, command: str
) -> Path:
    """The converted folder: weights and config, `conversion.json` (source, licence, command) and a model card."""
    save_converted(model, destination, str(checkpoint),
                   {"source": LLAMAGEN_SOURCE, "license": LLAMAGEN_LICENSE, "command": command})  # fmt: skip
    write_converted_tokenizer_card(model, destination, str(checkpoint), command)
    return Path(destination)


__all__ = [
    "convert_llamagen_vq", "llamagen_key_to_vq", "llamagen_state_dict_to_vq", "llamagen_to_vq_config",
    "load_llamagen_state_dict", "save_converted_llamagen_vq", "write_converted_tokenizer_card",
]  # fmt: skip
