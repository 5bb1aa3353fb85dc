"""Make tests/data/llamagen_vq/: a tiny LlamaGen VQ tokenizer built by LlamaGen's own code, and its outputs.

    python conversion/make_llamagen_test_data.py --llamagen /path/to/LlamaGen --output tests/data/llamagen_vq

Records how the test data of tests/test_conversion_llamagen_vq.py were made; CI never runs it (it needs a checkout
of https://github.com/FoundationVision/LlamaGen, of which only `tokenizer/tokenizer_image/vq_model.py` is imported,
and that file needs only torch). Nothing of vq_hub is imported here.

The model is LlamaGen's `VQModel` with its own `ModelArgs` (64 codes × 8, l2-normalised, z_channels 16) whose
encoder and decoder are replaced by LlamaGen's own `Encoder`/`Decoder` classes built smaller (ch 32 instead of the
hard-wired 128, ch_mult [1, 1], one residual block per level): the released VQ-16 has 72M parameters; this one has
0.24M, so its checkpoint stays under 0.5 MB. Every weight is LlamaGen's initialisation plus Gaussian noise (so no
GroupNorm is an identity that would hide a mapping mistake), rounded to float16 values; the checkpoint stores them in
float16 (`{"model": state_dict}`, LlamaGen's released format) and everything is computed in float32 from exactly
those values. Reference outputs, on fixed images in [-1, 1], computed by LlamaGen's model in eval mode:

- `latents`: `quant_conv(encoder(x))`, before quantization (vq_hub's `encode(x).latents`);
- `quantized`, `codes`: `model.encode(x)` → `(quant, _, (_, _, indices))`;
- `reconstruction`: `model.decode(quant)`; `reconstruction_from_codes`: `model.decode_code(indices, quant.shape)`.

`reference.json` records the LlamaGen commit, the configuration, the seed, torch's version and the smallest margin
between the best and the second-best code over all positions (codes are compared exactly; a margin far above float32
rounding means no position is a near-tie that another summation order could flip).
"""

import argparse
import importlib.util
import json
import subprocess
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

SEED = 0
CONFIG = dict(codebook_size=64, codebook_embed_dim=8, codebook_l2_norm=True, encoder_ch_mult=[1, 1],
              decoder_ch_mult=[1, 1], z_channels=16)  # fmt: skip
CODER = dict(ch=32, num_res_blocks=1)  # LlamaGen's Encoder/Decoder arguments that its ModelArgs does not expose
IMAGES = (2, 3, 32, 32)


def load_llamagen_module(checkout: Path):
    path = checkout / "tokenizer" / "tokenizer_image" / "vq_model.py"
    spec = importlib.util.spec_from_file_location("llamagen_vq_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_model(llamagen):
    torch.manual_seed(SEED)
    args = llamagen.ModelArgs(**CONFIG)
    model = llamagen.VQModel(args)
    model.encoder = llamagen.Encoder(ch_mult=args.encoder_ch_mult, z_channels=args.z_channels, **CODER)
    model.decoder = llamagen.Decoder(ch_mult=args.decoder_ch_mult, z_channels=args.z_channels, **CODER)
    generator = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for parameter in model.parameters():
            noisy = parameter + 0.1 * torch.randn(parameter.shape, generator=generator)
            parameter.copy_(noisy.half().float())  # float16 values, so the float16 checkpoint holds them exactly
    return model.eval()


@torch.no_grad()
def code_margin(model, quantized_input: torch.Tensor) -> float:
    """Smallest (second-best − best) of LlamaGen's own distance over all positions."""
    z = F.normalize(quantized_input.permute(0, 2, 3, 1).reshape(-1, quantized_input.shape[1]), dim=-1)
    codes = F.normalize(model.quantize.embedding.weight, dim=-1)
    distances = (z[:, None, :] - codes[None]).pow(2).sum(-1)
    best = distances.topk(2, dim=1, largest=False).values
    return float((best[:, 1] - best[:, 0]).min())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--llamagen", required=True, type=Path, help="A checkout of FoundationVision/LlamaGen.")
    parser.add_argument("--output", default="tests/data/llamagen_vq", type=Path)
    parser.add_argument("--commit", help="The LlamaGen commit, when the checkout is not a git repository.")
    args = parser.parse_args(argv)

    llamagen = load_llamagen_module(args.llamagen)
    model = build_model(llamagen)
    images = torch.rand(IMAGES, generator=torch.Generator().manual_seed(SEED + 2)) * 2 - 1
    with torch.no_grad():
        latents = model.quant_conv(model.encoder(images))
        quantized, _, (_, _, indices) = model.encode(images)
        reconstruction = model.decode(quantized)
        from_codes = model.decode_code(indices, quantized.shape)
    grid = (IMAGES[0], quantized.shape[2], quantized.shape[3])

    args.output.mkdir(parents=True, exist_ok=True)
    state_dict = {key: value.half() for key, value in model.state_dict().items()}
    torch.save({"model": state_dict}, args.output / "llamagen_vq_tiny.pt")
    outputs = {"images": images, "latents": latents, "quantized": quantized, "codes": indices.reshape(grid),
               "reconstruction": reconstruction, "reconstruction_from_codes": from_codes}  # fmt: skip
    save_file({name: value.contiguous() for name, value in outputs.items()}, args.output / "reference.safetensors")
    commit = args.commit
    if commit is None:
        result = subprocess.run(["git", "-C", str(args.llamagen), "rev-parse", "HEAD"], capture_output=True, text=True)
        commit = result.stdout.strip() if result.returncode == 0 else "unknown (not a git checkout; pass --commit)"
    record = {
        "source": "https://github.com/FoundationVision/LlamaGen", "commit": commit,
        "module": "tokenizer/tokenizer_image/vq_model.py", "license": "MIT", "model_args": CONFIG,
        "encoder_decoder_args": CODER, "seed": SEED, "images_shape": list(IMAGES), "torch": torch.__version__,
        "weights_dtype_in_checkpoint": "float16 (values exactly those of the float32 model that made the outputs)",
        "parameters": sum(p.numel() for p in model.parameters()),
        "codes_used": int(indices.unique().numel()), "smallest_code_margin": code_margin(model, latents),
        "command": "python conversion/make_llamagen_test_data.py --llamagen LLAMAGEN_CHECKOUT --output "
                   "tests/data/llamagen_vq",
    }  # fmt: skip
    (args.output / "reference.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
