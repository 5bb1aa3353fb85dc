"""Bring tokenizers trained elsewhere into vq_hub: diffusers `VQModel` folders and taming-transformers VQGAN
checkpoints. The scripts in `conversion/` are thin wrappers around these functions.

Both keep the weights bit for bit; only names and layouts change. Any key a converter does not consume is an error,
never a silent drop (taming's `loss.*` — discriminator and LPIPS — is set aside explicitly).
"""

import json
import os
import re
from pathlib import Path

import torch

from .models.vq_model import VQVAEModel
from .quantizers import VectorQuantizer

# diffusers' VQModel config entries that have no behaviour in ours: `lookup_from_codebook` (ours always decodes integer
# codes through the codebook) and `force_upcast` (ours computes distances in float32 anyway).
DIFFUSERS_ONLY_CONFIG = ("lookup_from_codebook", "force_upcast")
TAMING_VQ_TARGETS = ("taming.models.vqgan.VQVAEModel",)


def _fill_from_fresh_model(model: VQVAEModel, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load `state_dict` into `model`: every converted key must exist in ours and every weight of ours must be given;
    only our own statistics buffers (EMA usage, k-means flag, restart count), which other libraries do not have, keep
    their fresh values."""
    ours = model.state_dict()
    unexpected = sorted(set(state_dict) - set(ours))
    if unexpected:
        raise ValueError(f"{source}: {len(unexpected)} key(s) have no place in vq_hub's {type(model).__name__}: "
                         f"{unexpected[:10]}")
    statistics = {f"quantize.{name}" for name in VectorQuantizer.statistics_buffers}
    missing = sorted(set(ours) - set(state_dict) - statistics)  # a codebook is never optional
    if missing:
        raise ValueError(f"{source}: the checkpoint lacks {len(missing)} weight(s) of the model: {missing[:10]}")
    for key, value in state_dict.items():
        if ours[key].shape != value.shape:
            raise ValueError(
                f"{source}: {key} has shape {tuple(value.shape)}, the config implies {tuple(ours[key].shape)}"
            )
    model.load_state_dict({**ours, **state_dict})


# ------------------------------------------------------------------------------------------------- diffusers


def convert_diffusers_vqmodel(
    pretrained_model_name_or_path: str | os.PathLike, legacy_beta: bool = False, **kwargs
) -> VQVAEModel:
    """A diffusers `VQModel` (folder or Hub id, e.g. the aMUSEd or LDM VQ autoencoders) as a vq_hub `VQVAEModel`.

    The shared config entries and weight keys are the same; `legacy_beta=True` keeps diffusers' (and taming's) β on the
    codebook term for further training, the default puts it on the commitment term. `kwargs` go to diffusers'
    `from_pretrained` (`subfolder`, `revision`, `torch_dtype`, …).
    """
    from diffusers import VQModel as DiffusersVQModel

    source = DiffusersVQModel.from_pretrained(pretrained_model_name_or_path, **kwargs)
    config = {key: value for key, value in source.config.items() if not key.startswith("_")}
    for key in DIFFUSERS_ONLY_CONFIG:
        config.pop(key, None)
    model = VQVAEModel(**config, legacy_beta=legacy_beta, quantizer_recipe="plain")
    _fill_from_fresh_model(model, source.state_dict(), f"diffusers VQModel {pretrained_model_name_or_path}")
    return model if source.dtype == torch.float32 else model.to(source.dtype)


# ------------------------------------------------------------------------------------------------- taming-transformers


def load_taming_config(path: str | os.PathLike) -> dict:
    """The `model.params` of a taming-transformers YAML config (with `ddconfig`, `embed_dim`, `n_embed`)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`config` {str(path)!r} is not a file (the taming-transformers YAML)")
    document = yaml.safe_load(path.read_text())
    model = (document or {}).get("model", document) or {}
    target = model.get("target")
    if target is not None and target not in TAMING_VQ_TARGETS:
        raise ValueError(f"{path}: model.target is {target!r}; only {TAMING_VQ_TARGETS} converts (GumbelVQ and the "
                         "transformers of taming are other models)")  # fmt: skip
    params = model.get("params", model)
    if "ddconfig" not in params or "n_embed" not in params or "embed_dim" not in params:
        raise ValueError(f"{path}: expected model.params with ddconfig, embed_dim and n_embed")
    return params


def taming_to_vq_config(params: dict, legacy_beta: bool = False) -> dict:
    """taming's `ddconfig` + `embed_dim` + `n_embed` → a vq_hub `VQVAEModel` config."""
    dd = params["ddconfig"]
    if dd.get("double_z", False):
        raise ValueError("ddconfig.double_z is true: that is a KL autoencoder, not a VQGAN")
    ch_mult = list(dd["ch_mult"])
    if ch_mult[0] != 1:
        raise ValueError(f"ddconfig.ch_mult must start with 1 (taming's first level keeps `ch`), got {ch_mult}")
    resolution, attention = dd["resolution"], set(dd.get("attn_resolutions", []))
    # Level i of the encoder works at resolution / 2^i and has attention when that resolution is listed.
    levels = [resolution // 2**i for i in range(len(ch_mult))]
    down = ["AttnDownEncoderBlock2D" if size in attention else "DownEncoderBlock2D" for size in levels]
    up = ["AttnUpDecoderBlock2D" if size in attention else "UpDecoderBlock2D" for size in reversed(levels)]
    return dict(
        in_channels=dd["in_channels"],
        out_channels=dd["out_ch"],
        down_block_types=down,
        up_block_types=up,
        block_out_channels=[dd["ch"] * m for m in ch_mult],
        layers_per_block=dd["num_res_blocks"],
        latent_channels=dd["z_channels"],
        sample_size=resolution,
        num_vq_embeddings=params["n_embed"],
        vq_embed_dim=params["embed_dim"],
        norm_num_groups=32,
        commitment_beta=params.get("beta", 0.25),
        legacy_beta=legacy_beta,
        quantizer_recipe="plain",  # taming's quantizer: full-dimension codes, no normalisation
    )


_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "nin_shortcut": "conv_shortcut"}
_ATTENTION = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def _map_block(prefix: str, rest: str) -> str | None:
    """`block.j.<resnet part>` / `attn.j.<attention part>` → diffusers names under `prefix`."""
    match = re.fullmatch(r"block\.(\d+)\.(\w+)\.(weight|bias)", rest)
    if match and match.group(2) in _RESNET:
        return f"{prefix}.resnets.{match.group(1)}.{_RESNET[match.group(2)]}.{match.group(3)}"
    match = re.fullmatch(r"attn\.(\d+)\.(\w+)\.(weight|bias)", rest)
    if match and match.group(2) in _ATTENTION:
        return f"{prefix}.attentions.{match.group(1)}.{_ATTENTION[match.group(2)]}.{match.group(3)}"
    return None


def taming_key_to_vq(key: str, num_levels: int) -> str | None:
    """One taming-transformers VQGAN key → ours (None when it is not a tokenizer weight we know)."""
    if key in ("quantize.embedding.weight",) or re.fullmatch(r"(post_)?quant_conv\.(weight|bias)", key):
        return key
    match = re.fullmatch(r"(encoder|decoder)\.(conv_in|conv_out|norm_out)\.(weight|bias)", key)
    if match:
        name = "conv_norm_out" if match.group(2) == "norm_out" else match.group(2)
        return f"{match.group(1)}.{name}.{match.group(3)}"
    match = re.fullmatch(r"(encoder|decoder)\.mid\.(block_1|block_2|attn_1)\.(\w+)\.(weight|bias)", key)
    if match:
        part, name = match.group(2), match.group(3)
        if part == "attn_1" and name in _ATTENTION:
            return f"{match.group(1)}.mid_block.attentions.0.{_ATTENTION[name]}.{match.group(4)}"
        if part != "attn_1" and name in _RESNET:
            index = 0 if part == "block_1" else 1
            return f"{match.group(1)}.mid_block.resnets.{index}.{_RESNET[name]}.{match.group(4)}"
        return None
    match = re.fullmatch(r"encoder\.down\.(\d+)\.(.+)", key)
    if match:
        level, rest = int(match.group(1)), match.group(2)
        if rest in ("downsample.conv.weight", "downsample.conv.bias"):
            return f"encoder.down_blocks.{level}.downsamplers.0.conv.{rest.rsplit('.', 1)[1]}"
        return _map_block(f"encoder.down_blocks.{level}", rest)
    match = re.fullmatch(r"decoder\.up\.(\d+)\.(.+)", key)
    if match:
        # taming numbers decoder levels from the lowest resolution's *last* position; diffusers runs them in order.
        block, rest = num_levels - 1 - int(match.group(1)), match.group(2)
        if rest in ("upsample.conv.weight", "upsample.conv.bias"):
            return f"decoder.up_blocks.{block}.upsamplers.0.conv.{rest.rsplit('.', 1)[1]}"
        return _map_block(f"decoder.up_blocks.{block}", rest)
    return None


def taming_state_dict_to_vq(
    state_dict: dict[str, torch.Tensor], num_levels: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """`(tokenizer weights with our keys, taming's loss.* weights)`; any other unknown key raises."""
    converted, loss, unknown = {}, {}, []
    for key, value in state_dict.items():
        if key.startswith("loss."):
            loss[key[len("loss.") :]] = value
            continue
        new_key = taming_key_to_vq(key, num_levels)
        if new_key is None:
            unknown.append(key)
            continue
        converted[new_key] = attention_projection_as_linear(new_key, value)
    if unknown:
        raise ValueError(f"{len(unknown)} key(s) of the taming checkpoint are not understood: {unknown[:10]}")
    return converted, loss


def attention_projection_as_linear(key: str, value: torch.Tensor) -> torch.Tensor:
    """taming's (and LlamaGen's) attention projections are 1×1 convolutions, diffusers' are linear layers: the weight
    of one of diffusers' projection `key` loses its two trailing 1×1 dimensions; any other weight stays as it is."""
    projection = re.search(r"attentions\.\d+\.(to_q|to_k|to_v|to_out\.0)\.weight$", key)
    return value[:, :, 0, 0] if projection and value.ndim == 4 else value


def load_taming_state_dict(checkpoint: str | os.PathLike, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The `state_dict` of a taming-transformers `.ckpt` (a Lightning checkpoint) or of a bare state-dict file.

    Loaded with `torch.load(weights_only=True)`, which refuses to run pickled code. Old checkpoints that pickle other
    objects (e.g. Lightning callbacks) fail that way; `allow_pickle=True` loads them fully — only for files you trust.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"`checkpoint` {str(path)!r} is not a file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as error:
        if allow_pickle:
            raise
        raise ValueError(
            f"{path} cannot be loaded with weights_only=True: it pickles more than tensors ({type(error).__name__}; "
            "the cause is chained below). If you trust the file, pass allow_pickle=True (--allow_pickle), which "
            "runs the code pickled in it."
        ) from error
    state_dict = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError(f"{path} holds no state_dict of tensors")
    return state_dict


def convert_taming_vqgan(
    checkpoint: str | os.PathLike,
    config: str | os.PathLike,
    legacy_beta: bool = False,
    allow_pickle: bool = False,
) -> tuple[VQVAEModel, dict[str, torch.Tensor]]:
    """A taming-transformers VQGAN (`.ckpt` + YAML) as a vq_hub `VQVAEModel`, and the `loss.*` weights (discriminator,
    LPIPS) it carried, for who wants them."""
    params = load_taming_config(config)
    vq_config = taming_to_vq_config(params, legacy_beta=legacy_beta)
    weights, loss = taming_state_dict_to_vq(load_taming_state_dict(checkpoint, allow_pickle),
                                            len(vq_config["block_out_channels"]))  # fmt: skip
    model = VQVAEModel(**vq_config)
    _fill_from_fresh_model(model, weights, f"taming checkpoint {checkpoint}")
    return model, loss


def save_converted(model, destination: str | os.PathLike, source: str, extra: dict | None = None) -> Path:
    """`model.save_pretrained` (atomic; a tokenizer, a prior or a pipeline) plus `conversion.json` saying where the
    weights came from."""
    model.save_pretrained(destination)
    record = {"converted_from": source, **(extra or {})}
    (Path(destination) / "conversion.json").write_text(json.dumps(record, indent=2))
    return Path(destination)
