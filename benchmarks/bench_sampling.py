"""Sampling speed, timed round-robin in one run.

1. Codes/s from one autoregressive prior, three ways (decoding not timed):
   - `vq_hub`: `VQAutoregressivePipeline` (KV cache, top-k, the special tokens excluded);
   - `no cache`: the loop of taming-transformers' sampler, which re-runs the whole sequence for every new code;
   - `generate()`: transformers' `prior.generate(do_sample=True, top_k=…)` with the special tokens suppressed.
2. Images/s (decoded to PIL) of that autoregressive pipeline beside `VQDiscreteDiffusionPipeline` (a BERT denoiser of the
   same size, mask corruption, T = 100) at 8, 16 and 50 steps, on the same tokenizer.

The models are randomly initialised (speed does not depend on the weights).

    python benchmarks/bench_sampling.py [--device cuda] [--grid 16] [--codebook-size 1024] [--batch-size 8]
"""

import argparse
from functools import partial

import torch
from timing import median_seconds
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

from vq_hub import (
    DiscreteDiffusionScheduler, VQAutoregressivePipeline, VQDiscreteDiffusionPipeline, VQVAEModel, autoregressive_prior_config,
    denoiser_config,
)  # fmt: skip

DIFFUSION_STEPS = (8, 16, 50)


def build_pipelines(args, device: torch.device) -> tuple[VQAutoregressivePipeline, VQDiscreteDiffusionPipeline]:
    depth = 3  # 4× downsampling: a grid of g codes per side decodes to 4g pixels
    vqvae = VQVAEModel(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * depth,
        up_block_types=("UpDecoderBlock2D",) * depth, block_out_channels=(32, 32, 32), latent_channels=4,
        norm_num_groups=8, num_vq_embeddings=args.codebook_size, sample_size=4 * args.grid,
    )  # fmt: skip
    sizes = dict(num_classes=10, hidden_size=args.hidden_size, num_layers=args.num_layers, num_heads=args.num_heads)
    prior = AutoModelForCausalLM.from_config(autoregressive_prior_config(vqvae, **sizes))
    autoregressive = VQAutoregressivePipeline(vqvae=vqvae, prior=prior.eval()).to(device)
    config = denoiser_config(vqvae, **sizes)
    scheduler = DiscreteDiffusionScheduler(100, args.codebook_size, "mask", mask_token_id=config.mask_token_id)
    diffusion = VQDiscreteDiffusionPipeline(vqvae, AutoModelForMaskedLM.from_config(config).eval(), scheduler).to(device)
    for pipe in (autoregressive, diffusion):
        pipe.set_progress_bar_config(disable=True)
    return autoregressive, diffusion


@torch.no_grad()
def sample_without_cache(prior, first_tokens: torch.LongTensor, num_codes: int, codebook_size: int, top_k: int):
    """taming-transformers' `sample()` without its cache: each step feeds the whole sequence so far."""
    tokens = first_tokens
    for _ in range(num_codes):
        logits = prior(input_ids=tokens, attention_mask=torch.ones_like(tokens)).logits[:, -1, :codebook_size]
        values, _ = torch.topk(logits, top_k)
        logits[logits < values[:, -1:]] = -float("inf")
        tokens = torch.cat([tokens, torch.multinomial(torch.softmax(logits, -1), 1)], dim=1)
    return tokens[:, 1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--grid", type=int, default=16, help="Codes per side (16 → 256 codes per image).")
    parser.add_argument("--codebook-size", type=int, default=1024)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--num-layers", type=int, default=8)
    parser.add_argument("--num-heads", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    pipe, diffusion = build_pipelines(args, device)
    prior, vocabulary = pipe.prior, pipe.vocabulary
    num_codes = args.grid * args.grid
    labels = torch.arange(args.batch_size, device=device) % vocabulary.num_classes
    first_tokens = vocabulary.condition_tokens(labels, args.batch_size, device)[:, None]
    special_tokens = list(range(vocabulary.codebook_size, vocabulary.vocab_size))

    def synchronized(run):
        def timed() -> None:
            run()
            if device.type == "cuda":
                torch.cuda.synchronize()

        return timed

    runs = {
        "vq_hub pipeline (KV cache)": lambda: pipe(class_labels=labels, top_k=args.top_k, output_type="codes"),
        "no cache (taming-style loop)": lambda: sample_without_cache(prior, first_tokens, num_codes,
                                                                     vocabulary.codebook_size, args.top_k),
        "transformers generate()": lambda: prior.generate(
            input_ids=first_tokens, attention_mask=torch.ones_like(first_tokens), do_sample=True, top_k=args.top_k,
            max_new_tokens=num_codes, min_new_tokens=num_codes, suppress_tokens=special_tokens,
            pad_token_id=vocabulary.bos_token_id,
        ),
    }  # fmt: skip
    image_runs = {"VQAutoregressivePipeline": lambda: pipe(class_labels=labels, top_k=args.top_k)}
    for steps in DIFFUSION_STEPS:
        image_runs[f"VQDiscreteDiffusionPipeline, {steps} steps"] = partial(diffusion, num_steps=steps, class_labels=labels)
    runs = {name: synchronized(run) for name, run in {**runs, **image_runs}.items()}
    for run in runs.values():  # warm-up (allocator, kernels)
        run()
    seconds = median_seconds(runs, args.repeats)

    parameters = sum(p.numel() for p in prior.parameters()) / 1e6
    print(f"device {device}, torch {torch.__version__}; GPT-2 prior {parameters:.1f}M parameters "
          f"({args.num_layers} layers × {args.hidden_size}), {num_codes} codes per image ({args.grid}×{args.grid}), "
          f"codebook {args.codebook_size}, batch {args.batch_size}, top-k {args.top_k}; median of {args.repeats}")  # fmt: skip
    print()
    print("| sampler | s per batch | codes/s | speed vs vq_hub |")
    print("|---|---:|---:|---:|")
    reference = seconds["vq_hub pipeline (KV cache)"]
    for name in ("vq_hub pipeline (KV cache)", "no cache (taming-style loop)", "transformers generate()"):
        codes_per_second = args.batch_size * num_codes / seconds[name]
        print(f"| {name} | {seconds[name]:.3f} | {codes_per_second:,.0f} | {reference / seconds[name]:.2f}× |")
    print()
    print("| pipeline (decoded images) | s per batch | images/s |")
    print("|---|---:|---:|")
    for name in image_runs:
        print(f"| {name} | {seconds[name]:.3f} | {args.batch_size / seconds[name]:.1f} |")


if __name__ == "__main__":
    main()
