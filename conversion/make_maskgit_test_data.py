"""Make tests/data/maskgit_vqgan/: a tiny MaskGIT VQGAN built by open-muse's own code, and its outputs.

    python conversion/make_maskgit_test_data.py --open_muse /path/to/open-muse --output tests/data/maskgit_vqgan

Records how the test data of tests/test_conversion_maskgit_vqgan.py were made; CI never runs it. It needs a checkout
of https://github.com/huggingface/open-muse, of which only `muse/modeling_maskgit_vqgan.py` and the two modules it
imports (`muse/modeling_utils.py`, `muse/logging.py`; torch, accelerate, huggingface_hub) are loaded — not the
package's `__init__`, which imports every muse model. Nothing of vq_hub is imported here.

`model/` is a `MaskGitVQGAN` (ch 32, channel_mult [1, 1], two residual blocks per level, 64 codes of 8 dimensions)
saved by its own `save_pretrained`, with open-muse's initialisation plus Gaussian noise, rounded to float16 values
and stored in float16; every output is computed in float32 from exactly those values, by open-muse's model in eval
mode, on fixed images in [-1, 1]: `latents` (`encoder(x)`), `quantized` and `codes` (`encode(x)`),
`reconstruction` (`decode(quantized)`) and `reconstruction_from_codes` (`decode_code(codes)`).

A channel_mult with a second width would make the checkpoint ~1.4 MB, so the one MaskGIT part that such a model
adds, a `ResnetBlock` changing channels (its odd `nin_shortcut` on the block's output), is stored alone: open-muse's
`ResnetBlock(32, 64)` weights (`resnet.*`), an input and its output.
"""

import argparse
import importlib
import json
import subprocess
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

SEED = 0
CONFIG = dict(resolution=32, num_channels=3, hidden_channels=32, channel_mult=[1, 1], num_res_blocks=2,
              z_channels=8, num_embeddings=64, quantized_embed_dim=8)  # fmt: skip
IMAGES = (2, 3, 32, 32)


def load_open_muse_module(checkout: Path):
    """`muse.modeling_maskgit_vqgan` without running `muse/__init__.py` (the package is registered bare)."""
    package = types.ModuleType("muse")
    package.__path__ = [str(checkout / "muse")]
    package.__version__ = "0.0.1"  # muse/__init__.py's, which modeling_utils imports
    sys.modules["muse"] = package
    return importlib.import_module("muse.modeling_maskgit_vqgan")


def noisy_half_values(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            noisy = parameter + 0.1 * torch.randn(parameter.shape, generator=generator)
            parameter.copy_(noisy.half().float())
    return module.eval()


@torch.no_grad()
def code_margin(codebook: torch.Tensor, latents: torch.Tensor) -> float:
    vectors = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    best = torch.cdist(vectors.double(), codebook.double()).pow(2).topk(2, dim=1, largest=False).values
    return float((best[:, 1] - best[:, 0]).min())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--open_muse", required=True, type=Path, help="A checkout of huggingface/open-muse.")
    parser.add_argument("--output", default="tests/data/maskgit_vqgan", type=Path)
    parser.add_argument("--commit", help="The open-muse commit, when the checkout is not a git repository.")
    args = parser.parse_args(argv)

    muse = load_open_muse_module(args.open_muse)
    torch.manual_seed(SEED)
    model = noisy_half_values(muse.MaskGitVQGAN(**CONFIG), SEED + 1)
    images = torch.rand(IMAGES, generator=torch.Generator().manual_seed(SEED + 2)) * 2 - 1
    with torch.no_grad():
        latents = model.encoder(images)
        quantized, codes = model.encode(images)
        reconstruction = model.decode(quantized)
        from_codes = model.decode_code(codes)
    grid = (IMAGES[0], latents.shape[2], latents.shape[3])

    torch.manual_seed(SEED + 3)
    resnet = noisy_half_values(muse.ResnetBlock(32, 64), SEED + 4)
    resnet_input = torch.randn(2, 32, 8, 8, generator=torch.Generator().manual_seed(SEED + 5))
    with torch.no_grad():
        resnet_output = resnet(resnet_input)

    args.output.mkdir(parents=True, exist_ok=True)
    model.half().save_pretrained(str(args.output / "model"))
    outputs = {"images": images, "latents": latents, "quantized": quantized, "codes": codes.reshape(grid),
               "reconstruction": reconstruction, "reconstruction_from_codes": from_codes,
               "resnet_input": resnet_input, "resnet_output": resnet_output,
               **{f"resnet.{key}": value.half() for key, value in resnet.state_dict().items()}}  # fmt: skip
    save_file({name: value.contiguous() for name, value in outputs.items()}, args.output / "reference.safetensors")
    commit = args.commit
    if commit is None:
        result = subprocess.run(["git", "-C", str(args.open_muse), "rev-parse", "HEAD"], capture_output=True, text=True)
        commit = result.stdout.strip() if result.returncode == 0 else "unknown (not a git checkout; pass --commit)"
    record = {
        "source": "https://github.com/huggingface/open-muse", "commit": commit,
        "module": "muse/modeling_maskgit_vqgan.py", "license": "Apache-2.0", "config": CONFIG, "seed": SEED,
        "images_shape": list(IMAGES), "torch": torch.__version__,
        "weights_dtype_in_checkpoint": "float16 (values exactly those of the float32 model that made the outputs)",
        "parameters": sum(p.numel() for p in model.parameters()), "codes_used": int(codes.unique().numel()),
        "smallest_code_margin": code_margin(model.quantize.embedding.weight.float(), latents),
        "command": "python conversion/make_maskgit_test_data.py --open_muse OPEN_MUSE_CHECKOUT --output "
                   "tests/data/maskgit_vqgan",
    }  # fmt: skip
    (args.output / "reference.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
