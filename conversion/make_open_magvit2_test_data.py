"""Make tests/data/open_magvit2/: a tiny Open-MAGVIT2 tokenizer built by SEED-Voken's own code, and its outputs.

    PYTHONPATH=DEPS:SEED_VOKEN python conversion/make_open_magvit2_test_data.py --seed-voken SEED_VOKEN \
        --output tests/data/open_magvit2

Records how the test data of tests/test_conversion_open_magvit2.py were made; CI never runs it. It needs a checkout
of https://github.com/TencentARC/SEED-Voken on `PYTHONPATH` (its modules import each other as `src.Open_MAGVIT2…` and
`main`) and, in DEPS, what those modules import beyond torch: `lightning` and `einops` (`pip install --no-deps
--target DEPS lightning einops`). Nothing of vq_hub is imported here.

The model is SEED-Voken's `src.Open_MAGVIT2.models.lfqgan.VQModel` (the LightningModule of the released 256px
tokenizers), built with `use_ema=True` like `configs/Open-MAGVIT2/gpu/imagenet_lfqgan_256_L.yaml` but small: ch 32,
ch_mult [1, 1], one residual block per level, z_channels 6 (an LFQ of 2^6 codes) instead of 128, [1,1,2,2,4], 4, 18.
Its `lossconfig` is a small module holding SEED-Voken's own `NLayerDiscriminator` (ndf 8, one layer, built as
`VQLPIPSWithDiscriminator` builds it) under `loss.discriminator`, so the checkpoint carries loss keys as the released
ones do; LPIPS (`loss.perceptual_loss.*`, a 14.7M-parameter VGG-16 downloaded from torchvision) is left out: it
cannot be downloaded here and would weigh 29 MB. The converter drops every `loss.` key by the same rule.

Every weight is SEED-Voken's initialisation plus Gaussian noise, and the EMA copy (`model_ema.*`, LitEma's
dot-less names) gets noise of its own, so the EMA and the trained weights differ; all are rounded to float16 values
and stored in float16 (`{"state_dict": …}`, Lightning's checkpoint form, as released). Reference outputs, on fixed
images in [-1, 1], in eval mode under `model.ema_scope()` (as SEED-Voken's `reconstruct_image.py` and evaluation
scripts run a `use_ema` model):

- `latents`: `model.encoder(x)`, the LFQ input (vq_hub's `encode(x).latents`);
- `quantized`, `codes`: `model.encode(x)` → `(quant, _, indices, _)`, codes reshaped to `(B, h, w)`;
- `reconstruction`: `model.decode(quant)`;
- `reconstruction_from_codes`: `model.decode(model.quantize.get_codebook_entry(indices, (B, h, w, C), None))`, the
  path SEED-Voken's class-conditional transformer decodes its samples by;
- `codes_model_weights`, `reconstruction_model_weights`: the same outside `ema_scope` (the trained weights).

`reference.json` records the SEED-Voken commit, the configuration, the seed, torch's version and the smallest |latent|
(codes are signs, compared exactly; a magnitude far above float32 rounding means no sign is a near-tie).
"""

import argparse
import json
import subprocess
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

SEED = 6
DDCONFIG = dict(double_z=False, z_channels=6, resolution=16, in_channels=3, out_ch=3, ch=32, ch_mult=[1, 1],
                num_res_blocks=1)  # fmt: skip
QUANTIZER = dict(n_embed=64, embed_dim=6, sample_minimization_weight=1.0, batch_maximization_weight=1.0)
DISCRIMINATOR = dict(input_nc=3, ndf=8, n_layers=1)
IMAGES = (2, 3, 16, 16)


class SmallLoss(nn.Module):
    """The part of `VQLPIPSWithDiscriminator` that can be built here: its discriminator, as it builds it."""

    def __init__(self):
        super().__init__()
        from src.Open_MAGVIT2.modules.discriminator.model import NLayerDiscriminator, weights_init

        self.discriminator = NLayerDiscriminator(**DISCRIMINATOR).apply(weights_init)


def build_model():
    from src.Open_MAGVIT2.models.lfqgan import VQModel

    torch.manual_seed(SEED)
    model = VQModel(ddconfig=DDCONFIG, lossconfig={"target": "__main__.SmallLoss"}, use_ema=True, **QUANTIZER)
    generator = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.model_ema.named_buffers()):
            if name in ("decay", "num_updates"):
                continue
            noisy = tensor + 0.1 * torch.randn(tensor.shape, generator=generator)
            tensor.copy_(noisy.half().float())  # float16 values, so the float16 checkpoint holds them exactly
        for name, buffer in model.named_buffers():  # the discriminator's BatchNorm statistics
            if buffer.is_floating_point() and "running" in name:
                buffer.copy_((buffer + 0.1 * torch.randn(buffer.shape, generator=generator)).abs().half().float())
    return model.eval()


@torch.no_grad()
def outputs(model, images: torch.Tensor) -> dict[str, torch.Tensor]:
    latents = model.encoder(images)
    quantized, _, indices, _ = model.encode(images)
    batch, channels, height, width = quantized.shape
    entries = model.quantize.get_codebook_entry(indices.view(batch, -1), (batch, height, width, channels), None)
    return {"latents": latents, "quantized": quantized, "codes": indices.view(batch, height, width),
            "reconstruction": model.decode(quantized), "reconstruction_from_codes": model.decode(entries)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed-voken", required=True, type=Path, help="A checkout of TencentARC/SEED-Voken.")
    parser.add_argument("--output", default="tests/data/open_magvit2", type=Path)
    parser.add_argument("--commit", help="The SEED-Voken commit, when the checkout is not a git repository.")
    args = parser.parse_args(argv)

    model = build_model()
    images = torch.rand(IMAGES, generator=torch.Generator().manual_seed(SEED + 2)) * 2 - 1
    trained = outputs(model, images)
    with model.ema_scope():
        reference = outputs(model, images)
    reference.update(images=images, codes_model_weights=trained["codes"],
                     reconstruction_model_weights=trained["reconstruction"])  # fmt: skip

    args.output.mkdir(parents=True, exist_ok=True)
    state_dict = {key: value.half() if value.is_floating_point() and value.ndim else value for key, value in model.state_dict().items()}
    torch.save({"state_dict": state_dict, "epoch": 0, "global_step": 0}, args.output / "open_magvit2_tiny.ckpt")
    save_file({name: value.contiguous() for name, value in reference.items()}, args.output / "reference.safetensors")
    commit = args.commit
    if commit is None:
        result = subprocess.run(["git", "-C", str(args.seed_voken), "rev-parse", "HEAD"], capture_output=True, text=True)
        commit = result.stdout.strip() if result.returncode == 0 else "unknown (not a git checkout; pass --commit)"
    record = {
        "source": "https://github.com/TencentARC/SEED-Voken", "commit": commit,
        "module": "src/Open_MAGVIT2/models/lfqgan.py", "license": "Apache-2.0", "ddconfig": DDCONFIG,
        "quantizer": QUANTIZER, "use_ema": True, "loss": {"discriminator": DISCRIMINATOR, "lpips": "left out"},
        "seed": SEED, "images_shape": list(IMAGES), "torch": torch.__version__,
        "weights_dtype_in_checkpoint": "float16 (values exactly those of the float32 model that made the outputs)",
        "tokenizer_parameters": sum(p.numel() for n, p in model.named_parameters() if not n.startswith("loss.")),
        "codes_used": int(reference["codes"].unique().numel()),
        "smallest_abs_latent": float(reference["latents"].abs().min()),
        "smallest_abs_latent_model_weights": float(model.encoder(images).abs().min()),
        "command": "PYTHONPATH=DEPS:SEED_VOKEN python conversion/make_open_magvit2_test_data.py --seed-voken "
                   "SEED_VOKEN --output tests/data/open_magvit2",
    }  # fmt: skip
    (args.output / "reference.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
