"""Open-MAGVIT2's image tokenizers (TencentARC/SEED-Voken, `src/Open_MAGVIT2/models/lfqgan.py`; Apache-2.0) as a
vq_hub `MagvitV2Tokenizer`. The script `conversion/convert_open_magvit2.py` is a thin wrapper around these functions.

The released checkpoints (e.g. `imagenet_256_L.ckpt`, 2^18 codes) are Lightning checkpoints: `{"state_dict": …}` of
the whole `VQModel` LightningModule. Which of its keys become the tokenizer, by rule:

- `encoder.*`, `decoder.*`: the tokenizer, under the same names in `MagvitV2Tokenizer` (its modules are laid out as
  SEED-Voken's `improved_model.py`; the adaptive group norm's `gn` has no weights);
- `model_ema.*`: LitEma's moving averages of every trained parameter, named without dots (`model_ema.encoderconv_inweight`).
  SEED-Voken's reconstruction and evaluation scripts run a `use_ema` model under `ema_scope()`, i.e. with these, so
  they are taken by default (`weights="ema"`) in place of the trained `encoder.*`/`decoder.*` values; `"model"` takes
  the trained ones. `model_ema.decay`, `model_ema.num_updates` and the averages of the loss's parameters are dropped;
- `loss.*`: the training loss (LPIPS's VGG-16 and linear layers, the patch discriminator and its BatchNorm
  statistics) is dropped: it is not part of the tokenizer;
- the LFQ has no weights (its codebook is implied by the number of bits); anything else is refused by name.

The quantizer is vq_hub's `LookupFreeQuantizer` unchanged: SEED-Voken's `LFQ` quantizes channel `i` to `+1` if it is
`> 0` else `−1` and its index is `Σ_i [channel i > 0]·2^i` — our bit order (bit `i` = channel `i`, least significant
first) and scale 1. Its factorised tokens (`token_factorization=True`, the class-conditional transformers' two
heads of 9 bits) are `(code mod 2^9, code >> 9)` of our code. The entropy loss options are training settings the
checkpoint does not hold; the defaults are the released configs' (β 0.25, weight 0.1, τ 0.01).
"""

import os
import re
from pathlib import Path

import torch

from .conversion import _fill_from_fresh_model, load_taming_state_dict, save_converted
from .conversion_llamagen_vq import CONVERTED_TOKENIZER_CARD
from .models.magvit_v2 import MagvitV2Tokenizer
from .utils.io import write_text_atomically

OPEN_MAGVIT2_SOURCE = "https://github.com/TencentARC/SEED-Voken"
OPEN_MAGVIT2_LICENSE = "apache-2.0"
OPEN_MAGVIT2_WEIGHTS = ("ema", "model")
TOKENIZER_PREFIXES = ("encoder.", "decoder.")
EMA_PREFIX = "model_ema."
DROPPED_PREFIXES = ("loss.",)  # the training loss: LPIPS and the discriminator
EMA_BOOKKEEPING = ("model_ema.decay", "model_ema.num_updates")


# Open-MAGVIT2's checkpoints are Lightning checkpoints, as taming's: the `state_dict` entry (or a bare state dict),
# loaded with `torch.load(weights_only=True)`; anything pickled beyond plain values needs `allow_pickle=True`.
load_open_magvit2_state_dict = load_taming_state_dict


def open_magvit2_tokenizer_weights(
    state_dict: dict[str, torch.Tensor], weights: str | None = None
) -> dict[str, torch.Tensor]:
    """The tokenizer's weights, by the module docstring's rules: `weights="ema"` (the default when the checkpoint has
    `model_ema.*`) takes LitEma's averages, `"model"` the trained values; unknown keys raise, naming them."""
    if weights not in (None, *OPEN_MAGVIT2_WEIGHTS):
        raise ValueError(f"`weights` must be one of {OPEN_MAGVIT2_WEIGHTS} or None, got {weights!r}")
    tokenizer = {key: value for key, value in state_dict.items() if key.startswith(TOKENIZER_PREFIXES)}
    averages = {key[len(EMA_PREFIX):]: value for key, value in state_dict.items()
                if key.startswith(EMA_PREFIX) and key not in EMA_BOOKKEEPING}  # fmt: skip
    unknown = sorted(key for key in state_dict if not key.startswith((*TOKENIZER_PREFIXES, EMA_PREFIX,
                                                                      *DROPPED_PREFIXES)))  # fmt: skip
    if unknown:
        raise ValueError(f"{len(unknown)} key(s) of the Open-MAGVIT2 checkpoint are not understood: {unknown[:10]}")
    if weights == "ema" and not averages:
        raise ValueError("weights='ema' but the checkpoint has no `model_ema.*` entries (trained without use_ema); "
                         "use weights='model'")  # fmt: skip
    if weights == "model" or not averages:
        return tokenizer
    # LitEma names each parameter without its dots; map them back through the trained weights' names.
    by_flat_name = {}
    for key in tokenizer:
        if key.replace(".", "") in by_flat_name:
            raise ValueError(f"{key} and {by_flat_name[key.replace('.', '')]} have the same LitEma name")
        by_flat_name[key.replace(".", "")] = key
    missing = sorted(key for flat, key in by_flat_name.items() if flat not in averages)
    if missing:
        raise ValueError(f"the checkpoint's `model_ema` lacks the averages of {len(missing)} tokenizer weight(s): "
                         f"{missing[:10]} (use weights='model' for the trained weights)")  # fmt: skip
    return {key: averages[flat] for flat, key in by_flat_name.items()}


def _shape(state_dict: dict[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in state_dict:
        raise ValueError(f"the Open-MAGVIT2 checkpoint lacks {key}, which every Open-MAGVIT2 tokenizer has")
    return tuple(state_dict[key].shape)


def _count(state_dict: dict[str, torch.Tensor], prefix: str) -> int:
    """How many numbered submodules `prefix.<j>.` the weights hold."""
    pattern = re.compile(rf"{re.escape(prefix)}\.(\d+)\.")
    return len({m.group(1) for key in state_dict if (m := pattern.match(key))})


def open_magvit2_config(state_dict: dict[str, torch.Tensor], sample_size: int = 256) -> dict:
    """A `MagvitV2Tokenizer` config equal to the Open-MAGVIT2 tokenizer the weights belong to (read from shapes; the
    strict load that follows refuses a layout this config does not describe, naming the keys)."""
    levels = _count(state_dict, "encoder.down")
    if levels == 0:
        raise ValueError("the checkpoint has no encoder levels (`encoder.down.<i>.`)")
    widths = [_shape(state_dict, f"encoder.down.{i}.block.0.conv2.weight")[0] for i in range(levels)]
    stem, in_channels = _shape(state_dict, "encoder.conv_in.weight")[:2]
    if stem != widths[0]:
        raise ValueError(f"ch_mult must start with 1 (conv_in's {stem} channels feed the first level of {widths[0]}): "
                         "MagvitV2Tokenizer's first level keeps conv_in's width")  # fmt: skip
    latent_channels = _shape(state_dict, "encoder.conv_out.weight")[0]
    return dict(
        in_channels=in_channels,
        out_channels=_shape(state_dict, "decoder.conv_out.weight")[0],
        block_out_channels=widths,
        layers_per_block=_count(state_dict, "encoder.down.0.block"),
        latent_channels=latent_channels,
        num_vq_embeddings=2**latent_channels,  # SEED-Voken's LFQ: n_embed = 2^embed_dim, no projection
        sample_size=sample_size,
        norm_num_groups=32,  # improved_model.py's GroupNorm(32, …, eps=1e-6) throughout
    )


def convert_open_magvit2(
    checkpoint: str | os.PathLike, weights: str | None = None, sample_size: int = 256, allow_pickle: bool = False
) -> MagvitV2Tokenizer:
    """An Open-MAGVIT2 tokenizer checkpoint (e.g. `imagenet_256_L.ckpt`) as a vq_hub `MagvitV2Tokenizer` in float32,
    with the codes and reconstructions of SEED-Voken's `VQModel` (under `ema_scope()` when it has EMA weights).

    `weights`: `"ema"` or `"model"` (default: EMA when present). `sample_size`: the image size recorded in the config.
    """
    tokenizer = open_magvit2_tokenizer_weights(load_open_magvit2_state_dict(checkpoint, allow_pickle), weights)
    model = MagvitV2Tokenizer(**open_magvit2_config(tokenizer, sample_size=sample_size))
    # The quantizer's own training state (the entropy weight's step) has no counterpart: it keeps its fresh value.
    fresh = {key: value for key, value in model.state_dict().items() if key.startswith("quantize.")}
    _fill_from_fresh_model(model, {**fresh, **tokenizer}, f"Open-MAGVIT2 checkpoint {checkpoint}")
    return model.float()


def save_converted_open_magvit2(
    model: MagvitV2Tokenizer, destination: str | os.PathLike, checkpoint: str, command: str
) -> Path:
    """The converted folder: weights and config, `conversion.json` (source, licence, command) and a model card."""
    save_converted(model, destination, str(checkpoint),
                   {"source": OPEN_MAGVIT2_SOURCE, "license": OPEN_MAGVIT2_LICENSE, "command": command})  # fmt: skip
    size = model.config.sample_size
    card = CONVERTED_TOKENIZER_CARD.format(
        model_class="MagvitV2Tokenizer", license=OPEN_MAGVIT2_LICENSE, license_name="Apache-2.0",
        source_tag="open-magvit2", source_name="Open-MAGVIT2 (SEED-Voken)",
        title=f"Open-MAGVIT2 tokenizer {Path(checkpoint).stem} (vq_hub)", checkpoint=Path(checkpoint).name,
        codebook_size=model.codebook_size, code_dim=model.config.latent_channels,
        normalised=", lookup-free: one bit per dimension", factor=model.downsample_factor,
        source_url=OPEN_MAGVIT2_SOURCE, command=command, proof="tests/test_conversion_open_magvit2.py",
        folder=Path(destination).name, size=size, grid=size // model.downsample_factor,
        weights_note="The weights are the source's (its EMA weights when the checkpoint has them), unchanged and "
        "under the same names.",
    )  # fmt: skip
    write_text_atomically(Path(destination) / "README.md", card)
    return Path(destination)


__all__ = [
    "convert_open_magvit2", "load_open_magvit2_state_dict", "open_magvit2_config", "open_magvit2_tokenizer_weights",
    "save_converted_open_magvit2",
]  # fmt: skip
