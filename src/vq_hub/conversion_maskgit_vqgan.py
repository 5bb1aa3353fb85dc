"""MaskGIT's VQGAN as ported by open-muse (huggingface/open-muse, `muse/modeling_maskgit_vqgan.py`, `MaskGitVQGAN`;
Apache-2.0), e.g. the ImageNet tokenizer `openMUSE/maskgit-vqgan-imagenet-f16-256`, as a vq_hub `VQVAEModel`.

(aMUSEd's tokenizer is another model: open-muse's taming-style `VQGANModel`, which diffusers ships as a `VQModel`;
`convert_diffusers_vqmodel` converts it by copying.)

`MaskGitVQGAN` differs from diffusers' `Encoder`/`Decoder` in five places. None needs a new option: each becomes
weights of the diffusers layout that compute the same function (equal up to float rounding, not bit for bit):

1. Its residual block with a channel change adds `nin_shortcut(h)` to `h`, the block's own output, not its input
   (`residual = self.nin_shortcut(hidden_states)`): the block returns `(I + W)·conv2(…)` and drops its input. The
   shortcut is folded into `conv2` (`conv2' = (I + W)·conv2`, computed in float64) and diffusers' `conv_shortcut`
   gets zero weights, so the input is added times zero.
2. Its encoder downsamples by 2×2 average pooling; diffusers' by a stride-2 3×3 convolution after (0,1,0,1) padding.
   That convolution is given the average-pooling kernel (¼ on the 2×2 top-left taps of each channel, zero elsewhere).
3. Its decoder levels have `num_res_blocks` residual blocks; diffusers' have `layers_per_block + 1`. The extra
   (last) block of each level is an exact identity: its `conv2` is zero, so it returns its input plus zero.
4. Its encoder's `conv_out` is 1×1; diffusers' 3×3 (padding 1): the 1×1 kernel sits at the centre of zeros.
5. Its residual convolutions and encoder `conv_in` have no bias; diffusers' biases are zero.

Its middle blocks are `num_res_blocks` residual blocks without attention: diffusers' middle block without attention
(`mid_block_add_attention=False`) has two, so `num_res_blocks` must be 2 (as in every released MaskGIT VQGAN). There
is no `quant_conv`/`post_quant_conv` (`use_quant_conv=False`); the quantizer is taming's (nearest code in squared
L2, full-dimension codes) with β on the codebook term (`legacy_beta=True`). For further training, the converted
model is the same function in diffusers' richer layout (3×3 `conv_out`, learned downsampling, an extra residual block
per decoder level), not MaskGIT's architecture.
"""

import json
import os
from pathlib import Path

import torch

from .conversion import _fill_from_fresh_model, save_converted
from .conversion_llamagen_vq import CONVERTED_TOKENIZER_CARD
from .models.vq_model import VQVAEModel
from .utils.io import write_text_atomically

MASKGIT_SOURCE = "https://github.com/huggingface/open-muse"
MASKGIT_LICENSE = "apache-2.0"
MASKGIT_WEIGHT_FILES = ("pytorch_model.bin", "pytorch_model.safetensors", "model.safetensors")
# Config entries of MaskGitVQGAN that its code does not use (its encoder has no attention; it always resamples as
# described above) or that only set a loss weight.
_UNUSED_CONFIG = ("attn_resolutions", "resample_with_conv", "dropout", "_class_name", "_version")


def maskgit_to_vq_config(config: dict) -> dict:
    """A `MaskGitVQGAN` config (its `config.json`) → a vq_hub `VQVAEModel` config."""
    mult = list(config.get("channel_mult", (1, 1, 2, 2, 4)))
    hidden, blocks = config.get("hidden_channels", 128), config.get("num_res_blocks", 2)
    z_channels, code_dim = config.get("z_channels", 256), config.get("quantized_embed_dim", 256)
    if mult[0] != 1:
        raise ValueError(f"channel_mult must start with 1 (the first level keeps conv_in's channels), got {mult}")
    if blocks != 2:
        raise ValueError(f"num_res_blocks is {blocks}: MaskGIT's middle blocks then have {blocks} residual blocks, "
                         "and VQVAEModel's (diffusers') middle block has 2")  # fmt: skip
    if z_channels != code_dim:
        raise ValueError(f"z_channels {z_channels} ≠ quantized_embed_dim {code_dim}: MaskGitVQGAN has no quant_conv")
    return dict(
        in_channels=config.get("num_channels", 3),
        out_channels=config.get("num_channels", 3),
        down_block_types=["DownEncoderBlock2D"] * len(mult),
        up_block_types=["UpDecoderBlock2D"] * len(mult),
        block_out_channels=[hidden * m for m in mult],
        layers_per_block=blocks,
        latent_channels=z_channels,
        sample_size=config.get("resolution", 256),
        num_vq_embeddings=config.get("num_embeddings", 1024),
        vq_embed_dim=code_dim,
        norm_num_groups=32,
        mid_block_add_attention=False,
        use_quant_conv=False,
        use_post_quant_conv=False,
        commitment_beta=config.get("commitment_cost", 0.25),
        legacy_beta=True,  # MaskGIT's loss: ||sg[z_q] − z||² + β·||z_q − sg[z]||², β on the codebook term
        quantizer_recipe="plain",  # MaskGIT's quantizer: full-dimension codes, squared L2, no normalisation
        use_l2_norm=False,
        kmeans_init=False,
        dead_code_threshold=0.0,
    )


class _Weights:
    """The source state dict, handing out tensors by key and remembering which were taken."""

    def __init__(self, state_dict: dict[str, torch.Tensor]):
        self.state_dict, self.taken = state_dict, set()

    def __call__(self, key: str) -> torch.Tensor:
        if key not in self.state_dict:
            raise ValueError(f"the MaskGIT checkpoint lacks {key}")
        self.taken.add(key)
        return self.state_dict[key].float()

    def has(self, key: str) -> bool:
        return key in self.state_dict


def maskgit_resnet_to_diffusers(weights, source: str, target: str) -> dict[str, torch.Tensor]:
    """One MaskGIT `ResnetBlock` (`source.norm1/conv1/norm2/conv2[/nin_shortcut]`) → diffusers `ResnetBlock2D`
    weights under `target` computing the same function (see the module's notes 1 and 5). `weights`: a state dict."""
    weights = weights if isinstance(weights, _Weights) else _Weights(weights)
    out = {}
    for norm in ("norm1", "norm2"):
        out[f"{target}.{norm}.weight"], out[f"{target}.{norm}.bias"] = (weights(f"{source}.{norm}.weight"),
                                                                         weights(f"{source}.{norm}.bias"))  # fmt: skip
    conv1, conv2 = weights(f"{source}.conv1.weight"), weights(f"{source}.conv2.weight")
    out[f"{target}.conv1.weight"], out[f"{target}.conv1.bias"] = conv1, torch.zeros(conv1.shape[0])
    if weights.has(f"{source}.nin_shortcut.weight"):
        shortcut = weights(f"{source}.nin_shortcut.weight")[:, :, 0, 0].double()
        folded = torch.eye(shortcut.shape[0], dtype=torch.float64) + shortcut
        conv2 = torch.einsum("om,mikl->oikl", folded, conv2.double()).float()
        out[f"{target}.conv_shortcut.weight"] = torch.zeros(conv2.shape[0], conv1.shape[1], 1, 1)
        out[f"{target}.conv_shortcut.bias"] = torch.zeros(conv2.shape[0])
    out[f"{target}.conv2.weight"], out[f"{target}.conv2.bias"] = conv2, torch.zeros(conv2.shape[0])
    return out


def _identity_resnet(target: str, channels: int) -> dict[str, torch.Tensor]:
    """A diffusers `ResnetBlock2D` (channels → channels) that returns its input exactly: `conv2` is zero."""
    out = {}
    for norm in ("norm1", "norm2"):
        out[f"{target}.{norm}.weight"], out[f"{target}.{norm}.bias"] = torch.ones(channels), torch.zeros(channels)
    for conv in ("conv1", "conv2"):
        out[f"{target}.{conv}.weight"] = torch.zeros(channels, channels, 3, 3)
        out[f"{target}.{conv}.bias"] = torch.zeros(channels)
    return out


def _average_pool_conv(channels: int) -> torch.Tensor:
    """The stride-2 3×3 kernel that, after diffusers' (0,1,0,1) padding, averages each channel's 2×2 blocks."""
    kernel = torch.zeros(channels, channels, 3, 3)
    kernel[torch.arange(channels), torch.arange(channels), :2, :2] = 0.25
    return kernel


def maskgit_state_dict_to_vq(state_dict: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """MaskGitVQGAN weights → vq_hub `VQVAEModel` weights of `config` (a `maskgit_to_vq_config` result); any source
    key left unused is an error naming it."""
    weights, out = _Weights(state_dict), {}
    widths, blocks = config["block_out_channels"], config["layers_per_block"]
    levels = len(widths)

    out["encoder.conv_in.weight"] = weights("encoder.conv_in.weight")
    out["encoder.conv_in.bias"] = torch.zeros(widths[0])
    for level in range(levels):
        for j in range(blocks):
            out |= maskgit_resnet_to_diffusers(weights, f"encoder.down.{level}.block.{j}",
                                               f"encoder.down_blocks.{level}.resnets.{j}")  # fmt: skip
        if level != levels - 1:
            out[f"encoder.down_blocks.{level}.downsamplers.0.conv.weight"] = _average_pool_conv(widths[level])
            out[f"encoder.down_blocks.{level}.downsamplers.0.conv.bias"] = torch.zeros(widths[level])
    for part in ("encoder", "decoder"):
        for j in range(2):
            out |= maskgit_resnet_to_diffusers(weights, f"{part}.mid.{j}", f"{part}.mid_block.resnets.{j}")
        out[f"{part}.conv_norm_out.weight"] = weights(f"{part}.norm_out.weight")
        out[f"{part}.conv_norm_out.bias"] = weights(f"{part}.norm_out.bias")
    conv_out = weights("encoder.conv_out.weight")
    out["encoder.conv_out.weight"] = torch.nn.functional.pad(conv_out, (1, 1, 1, 1))  # 1×1 at the centre of 3×3
    out["encoder.conv_out.bias"] = weights("encoder.conv_out.bias")

    for name in ("conv_in", "conv_out"):
        out[f"decoder.{name}.weight"], out[f"decoder.{name}.bias"] = (weights(f"decoder.{name}.weight"),
                                                                      weights(f"decoder.{name}.bias"))  # fmt: skip
    for block in range(levels):  # diffusers runs up_blocks in order; MaskGIT runs `up` from its last entry
        source = f"decoder.up.{levels - 1 - block}"
        for j in range(blocks):
            out |= maskgit_resnet_to_diffusers(weights, f"{source}.block.{j}", f"decoder.up_blocks.{block}.resnets.{j}")
        out |= _identity_resnet(f"decoder.up_blocks.{block}.resnets.{blocks}", widths[levels - 1 - block])
        if block != levels - 1:
            for kind in ("weight", "bias"):
                out[f"decoder.up_blocks.{block}.upsamplers.0.conv.{kind}"] = weights(f"{source}.upsample_conv.{kind}")
    out["quantize.embedding.weight"] = weights("quantize.embedding.weight")

    unused = sorted(set(state_dict) - weights.taken)
    if unused:
        raise ValueError(f"{len(unused)} key(s) of the MaskGIT checkpoint are not understood: {unused[:10]}")
    return out


def load_maskgit_folder(folder: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """`(config, state_dict)` of a `MaskGitVQGAN.save_pretrained` folder (`config.json` and `pytorch_model.bin` or
    a safetensors file), read with `torch.load(weights_only=True)`."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json (a MaskGitVQGAN.save_pretrained folder is expected)")
    config = json.loads((folder / "config.json").read_text())
    if config.get("_class_name", "MaskGitVQGAN") != "MaskGitVQGAN":
        raise ValueError(f"{folder}/config.json describes a {config['_class_name']}, not a MaskGitVQGAN")
    path = next((folder / name for name in MASKGIT_WEIGHT_FILES if (folder / name).is_file()), None)
    if path is None:
        raise FileNotFoundError(f"{folder} holds none of {MASKGIT_WEIGHT_FILES}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return config, load_file(path)
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} cannot be loaded with weights_only=True: it pickles more than tensors") from error
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError(f"{path} holds no state dict of tensors")
    return config, state_dict


def convert_maskgit_vqgan(folder: str | os.PathLike) -> VQVAEModel:
    """An open-muse `MaskGitVQGAN` folder as a vq_hub `VQVAEModel` (float32) with the same codes and, up to float
    rounding, the same latents and reconstructions."""
    config, state_dict = load_maskgit_folder(folder)
    vq_config = maskgit_to_vq_config(config)
    model = VQVAEModel(**vq_config)
    _fill_from_fresh_model(model, maskgit_state_dict_to_vq(state_dict, vq_config), f"MaskGIT VQGAN {folder}")
    return model


def save_converted_maskgit_vqgan(
    model: VQVAEModel, destination: str | os.PathLike, source: str, command: str
) -> Path:
    """The converted folder: weights and config, `conversion.json` and a model card (source, licence, command)."""
    save_converted(model, destination, str(source),
                   {"source": MASKGIT_SOURCE, "license": MASKGIT_LICENSE, "command": command})  # fmt: skip
    size = model.config.sample_size
    card = CONVERTED_TOKENIZER_CARD.format(
        model_class="VQVAEModel", license=MASKGIT_LICENSE, license_name="Apache-2.0", source_tag="maskgit", source_name="MaskGIT (open-muse)",
        title=f"MaskGIT VQGAN {Path(source).name} (vq_hub)", checkpoint=Path(source).name,
        codebook_size=model.codebook_size, code_dim=model.config.vq_embed_dim, normalised="",
        factor=model.downsample_factor, source_url=MASKGIT_SOURCE, command=command,
        proof="tests/test_conversion_maskgit_vqgan.py", folder=Path(destination).name, size=size,
        grid=size // model.downsample_factor,
        weights_note="The weights compute the source's function in diffusers' layout: a few are folded, padded or "
        "added (see `vq_hub.conversion_maskgit_vqgan`), so outputs are equal up to float rounding.",
    )  # fmt: skip
    write_text_atomically(Path(destination) / "README.md", card)
    return Path(destination)
