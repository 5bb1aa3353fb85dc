"""LlamaGen-B's sampling speed: vq_hub's converted prior against LlamaGen's own `generate`, same weights, one run.

    python benchmarks/llamagen_sampling.py --llamagen /path/to/LlamaGen [--image-size 256] [--batch-sizes 8 64]
        [--dtype bfloat16] [--repeats 3] [--out llamagen_sampling.json]

LlamaGen's GPT-B (12 layers of width 768, 16,384 codes, 1,000 classes; 111M parameters) is built by LlamaGen's own
code (`autoregressive/models/gpt.py`, from the checkout given) with random weights — speed does not depend on them —,
saved in LlamaGen's checkpoint format and converted with `vq_hub.conversion_llamagen_gpt.convert_llamagen_gpt`. Both
then sample the same class-conditional batches with LlamaGen's defaults (guidance 4.0, top-k 2000, temperature 1):

- `vq_hub`: `VQAutoregressivePipeline(..., output_type="codes")` with `cuda_graphs = True` (the per-code step recorded
  as a CUDA graph and replayed; the recording is inside every timed call);
- `LlamaGen generate`: `autoregressive.models.generate.generate` (its static KV cache, eager; LlamaGen's sample script
  can add `torch.compile`, not timed here).

Codes/s = batch × codes per image / seconds (the median of `--repeats` calls, timed round-robin after one warm-up
call each; decoding to pixels is not timed). Before timing, both sample greedily in float32 (TF32 off) for two
classes and the share of equal codes is reported (the greedy codes are equal in the CPU proof,
tests/test_conversion_llamagen_gpt.py). Absolute times are only meaningful on a GPU: without CUDA the script refuses,
unless `--smoke`, which runs a tiny model (2 layers of width 64, a 4×4 grid) to check that the script works.
"""

import argparse
import importlib
import json
import sys
import tempfile
from pathlib import Path

import torch
from timing import median_seconds

from vq_hub import VQAutoregressivePipeline, VQVAEModel
from vq_hub.conversion_llamagen_gpt import convert_llamagen_gpt

GPT_B = dict(n_layer=12, n_head=12, dim=768)
SMOKE = dict(n_layer=2, n_head=4, dim=64)
GUIDANCE, TOP_K = 4.0, 2000
GREEDY_LABELS = [207, 360]


def load_llamagen(checkout: Path):
    sys.path.insert(0, str(checkout.resolve()))  # gpt.py imports `utils.drop_path` from the checkout's root
    gpt = importlib.import_module("autoregressive.models.gpt")
    return gpt, importlib.import_module("autoregressive.models.generate")


def build_pair(gpt, sizes: dict, grid: int, folder: Path):
    """LlamaGen's model (random weights, float32) and vq_hub's conversion of its checkpoint."""
    torch.manual_seed(0)
    model = gpt.Transformer(gpt.ModelArgs(**sizes, vocab_size=16384, num_classes=1000, block_size=grid * grid))
    with torch.no_grad():  # LlamaGen zeroes its output layer at initialisation: every logit would tie
        model.output.weight.normal_(0.0, 0.02)
    torch.save({"model": model.state_dict()}, folder / "llamagen_random.pt")
    prior = convert_llamagen_gpt(folder / "llamagen_random.pt", grid_size=grid, num_heads=sizes["n_head"])
    vqvae = VQVAEModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                       up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 32), latent_channels=8,
                       norm_num_groups=8, num_vq_embeddings=16384, sample_size=2 * grid)  # fmt: skip
    pipe = VQAutoregressivePipeline(vqvae=vqvae, prior=prior)
    pipe.set_progress_bar_config(disable=True)
    return model.eval(), pipe


def synchronised(function):
    def run():
        function()
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    return run


@torch.no_grad()
def greedy_agreement(generate, model, pipe, num_codes: int, device) -> float:
    labels = torch.tensor(GREEDY_LABELS, device=device)
    theirs = generate.generate(model, labels, num_codes, cfg_scale=GUIDANCE, sample_logits=False, top_k=0)
    ours = pipe(class_labels=labels, guidance_scale=GUIDANCE, temperature=0, output_type="codes").codes.flatten(1)
    return float((theirs.long() == ours).float().mean())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--llamagen", required=True, type=Path, help="A checkout of FoundationVision/LlamaGen.")
    parser.add_argument("--image-size", type=int, default=256, choices=(256, 384), help="Grid 16×16 or 24×24.")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"),
                        help="Sampling precision of both (LlamaGen samples in bfloat16 by default).")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="A tiny model, to check the script (CPU allowed).")
    parser.add_argument("--out", help="Write the results as JSON here.")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() and not args.smoke:
        parser.error("no CUDA device: absolute times are only meaningful on a GPU (--smoke checks the script on CPU)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpt, generate = load_llamagen(args.llamagen)
    grid = 4 if args.smoke else args.image_size // 16
    num_codes = grid * grid
    torch.backends.cuda.matmul.allow_tf32 = False

    with tempfile.TemporaryDirectory() as folder:
        model, pipe = build_pair(gpt, SMOKE if args.smoke else GPT_B, grid, Path(folder))
    model, pipe = model.to(device), pipe.to(device)
    agreement = greedy_agreement(generate, model, pipe, num_codes, device)
    dtype = getattr(torch, args.dtype)
    model, pipe.prior = model.to(dtype), pipe.prior.to(dtype)
    pipe.cuda_graphs = True
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (smoke run)",
               "torch": torch.__version__, "dtype": args.dtype, "codes_per_image": num_codes,
               "parameters": sum(p.numel() for p in model.parameters()), "guidance_scale": GUIDANCE, "top_k": TOP_K,
               "greedy_float32_codes_equal": agreement, "rows": []}  # fmt: skip
    print(f"{results['device']}: {results['parameters']:,} parameters, {num_codes} codes per image, {args.dtype}; "
          f"greedy float32 codes equal: {agreement:.1%}")  # fmt: skip
    for batch_size in args.batch_sizes:
        labels = torch.arange(batch_size, device=device) * 7 % 1000

        def ours():
            generator = torch.Generator(device).manual_seed(0)
            pipe(class_labels=labels, guidance_scale=GUIDANCE, top_k=TOP_K, generator=generator, output_type="codes")

        def theirs():
            generate.generate(model, labels, num_codes, cfg_scale=GUIDANCE, top_k=TOP_K, sample_logits=True)

        runs = {"vq_hub (CUDA graphs)": synchronised(ours), "LlamaGen generate": synchronised(theirs)}
        for run in runs.values():
            run()  # warm-up: kernels chosen, memory allocated
        seconds = median_seconds(runs, args.repeats)
        for name, value in seconds.items():
            row = {"sampler": name, "batch_size": batch_size, "seconds": value,
                   "codes_per_second": batch_size * num_codes / value}  # fmt: skip
            results["rows"].append(row)
            print(f"batch {batch_size:3d}  {name:22s} {value:8.3f} s  {row['codes_per_second']:10.0f} codes/s")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
