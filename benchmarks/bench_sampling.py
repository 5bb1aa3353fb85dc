"""Sampling speed, timed round-robin in one run.

1. Codes/s from one autoregressive prior (decoding not timed):
   - `vq_hub`: `VQAutoregressivePipeline` with its default dynamic KV cache, with the static cache, with the step
     recorded as a CUDA graph, and guided (guidance 3: conditional and unconditional rows as one batch);
   - `no cache`: the loop of taming-transformers' sampler, which re-runs the whole sequence for every new code;
   - `generate()`: transformers' `prior.generate(do_sample=True, top_k=…)` with the special tokens suppressed;
   - with `--compile`: the static cache with `torch.compile` on the prior's forward (compile time printed apart).
2. Images/s (decoded to PIL) at batch 1 and 32 of that autoregressive pipeline beside `VQDiscreteDiffusionPipeline`
   (a BERT denoiser of the same size, mask corruption, T = 100) at 8 and 16 steps on the same tokenizer, and the
   share of each diffusion call spent outside the denoiser (scheduler, sampling, decoding, Python): the pipeline's
   time against the same number of bare denoiser calls on the same shapes.

The models are randomly initialised (speed does not depend on the weights).

    python benchmarks/bench_sampling.py [--device cuda] [--grid 16] [--codebook-size 1024] [--batch-size 8]
        [--image-batch-sizes 1 32] [--diffusion-steps 8 16] [--compile]

The "CUDA graph step" rows (`pipe.cuda_graphs = True`) record the decoding step on a GPU, the recording included in
every timed call; on a CPU they run the same static-shape step without a graph.
"""

import argparse
import time
from functools import partial

import torch
from timing import median_seconds
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, DynamicCache

from vq_hub import (
    DiscreteDiffusionScheduler, VQAutoregressivePipeline, VQDiscreteDiffusionPipeline, VQVAEModel, autoregressive_prior_config,
    denoiser_config,
)  # fmt: skip
from vq_hub.pipelines.autoregressive import cache_keyword


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


def synchronized(run, device: torch.device):
    def timed() -> None:
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return timed


def code_sampler_runs(args, pipe, device) -> dict:
    """The samplers of table 1, each drawing one batch of `args.batch_size` code grids."""
    prior, vocabulary = pipe.prior, pipe.vocabulary
    num_codes = args.grid * args.grid
    labels = torch.arange(args.batch_size, device=device) % vocabulary.num_classes
    first_tokens = vocabulary.condition_tokens(labels, args.batch_size, device)[:, None]
    special_tokens = list(range(vocabulary.codebook_size, vocabulary.vocab_size))

    def pipeline(cache_implementation: str, cuda_graphs: bool = False, **kwargs):
        def run():
            pipe.cache_implementation, pipe.cuda_graphs = cache_implementation, cuda_graphs
            try:
                pipe(class_labels=labels, top_k=args.top_k, output_type="codes", **kwargs)
            finally:
                pipe.cuda_graphs = False

        return run

    @torch.no_grad()
    def forward_alone() -> None:  # the floor of any eager sampler: the prior's cached steps, nothing else
        cache, tokens = DynamicCache(config=prior.config), first_tokens
        for length in range(1, num_codes + 1):
            mask = torch.ones(args.batch_size, length, dtype=torch.long, device=device)
            prior(input_ids=tokens, attention_mask=mask, use_cache=True, **{cache_keyword(type(prior)): cache})
            tokens = torch.zeros_like(first_tokens)

    return {
        "prior forward alone (KV cache, no sampling)": forward_alone,
        "vq_hub pipeline (dynamic KV cache, default)": pipeline("dynamic"),
        "vq_hub pipeline (static KV cache)": pipeline("static"),
        "vq_hub pipeline (CUDA graph step, recorded in every call)": pipeline("static", cuda_graphs=True),
        "vq_hub pipeline, guided (guidance 3), CUDA graph step": pipeline("static", cuda_graphs=True,
                                                                          guidance_scale=3.0),
        "vq_hub pipeline, guided (guidance 3)": pipeline("dynamic", guidance_scale=3.0),
        "no cache (taming-style loop)": lambda: sample_without_cache(prior, first_tokens, num_codes,
                                                                     vocabulary.codebook_size, args.top_k),
        "transformers generate()": lambda: prior.generate(
            input_ids=first_tokens, attention_mask=torch.ones_like(first_tokens), do_sample=True, top_k=args.top_k,
            max_new_tokens=num_codes, min_new_tokens=num_codes, suppress_tokens=special_tokens,
            pad_token_id=vocabulary.bos_token_id,
        ),
    }  # fmt: skip


def image_runs(args, pipe, diffusion, device) -> dict:
    """Table 2: decoded images at each batch size; bare denoiser calls of the same shapes beside each diffusion run."""
    runs = {}
    sequence_length = 1 + args.grid * args.grid  # condition token + grid
    for batch_size in args.image_batch_sizes:
        labels = torch.arange(batch_size, device=device) % pipe.vocabulary.num_classes
        runs[(batch_size, "VQAutoregressivePipeline")] = partial(pipe, class_labels=labels, top_k=args.top_k)
        tokens = torch.randint(0, args.codebook_size, (batch_size, sequence_length), device=device)
        for steps in args.diffusion_steps:
            runs[(batch_size, f"VQDiscreteDiffusionPipeline, {steps} steps")] = partial(
                diffusion, num_steps=steps, class_labels=labels
            )

            def bare(steps=steps, tokens=tokens):
                with torch.no_grad():
                    for _ in range(steps):
                        diffusion.denoiser(input_ids=tokens, attention_mask=torch.ones_like(tokens))

            runs[(batch_size, f"denoiser alone, {steps} calls")] = bare
    return runs


def compile_prior(pipe, args, device) -> float:
    """Static cache + `torch.compile` on the prior's forward; returns the seconds of the first (compiling) call."""
    pipe.prior.forward = torch.compile(pipe.prior.forward, dynamic=False)
    pipe.cache_implementation = "static"
    labels = torch.arange(args.batch_size, device=device) % pipe.vocabulary.num_classes
    start = time.perf_counter()
    pipe(class_labels=labels, top_k=args.top_k, output_type="codes")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--grid", type=int, default=16, help="Codes per side (16 → 256 codes per image).")
    parser.add_argument("--codebook-size", type=int, default=1024)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--num-layers", type=int, default=8)
    parser.add_argument("--num-heads", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8, help="Batch of table 1 (codes/s).")
    parser.add_argument("--image-batch-sizes", type=int, nargs="+", default=[1, 32], help="Batches of table 2.")
    parser.add_argument("--diffusion-steps", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="Also time static cache + torch.compile.")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    pipe, diffusion = build_pipelines(args, device)
    num_codes = args.grid * args.grid
    code_runs = code_sampler_runs(args, pipe, device)
    pictures = image_runs(args, pipe, diffusion, device)
    runs = {name: synchronized(run, device) for name, run in {**code_runs, **pictures}.items()}
    for name, run in list(runs.items()):  # warm-up (allocator, kernels); a sampler that fails is reported, not timed
        try:
            run()
        except Exception as error:  # noqa: BLE001 (the table must still come out, naming what failed and why)
            print(f"{name}: FAILED ({type(error).__name__}: {error})")
            del runs[name]
    seconds = median_seconds(runs, args.repeats)
    pipe.cache_implementation = "dynamic"
    if args.compile:
        compile_seconds = compile_prior(pipe, args, device)
        compiled = {"vq_hub pipeline (static KV cache + torch.compile)": synchronized(code_runs["vq_hub pipeline (static KV cache)"], device)}
        seconds.update(median_seconds(compiled, args.repeats))

    parameters = sum(p.numel() for p in pipe.prior.parameters()) / 1e6
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; GPT-2 prior "
          f"{parameters:.1f}M parameters ({args.num_layers} layers × {args.hidden_size}), {num_codes} codes per image "
          f"({args.grid}×{args.grid}), codebook {args.codebook_size}, top-k {args.top_k}; median of {args.repeats}")
    print()
    print(f"| sampler (batch {args.batch_size}) | s per batch | codes/s | vq_hub default is faster by | codes/s "
          "÷ generate()'s |")
    print("|---|---:|---:|---:|---:|")
    reference = seconds.get("vq_hub pipeline (dynamic KV cache, default)")  # absent when it failed (said above)
    generate = seconds.get("transformers generate()")

    def ratio(numerator, denominator) -> str:
        return "—" if numerator is None or denominator is None else f"{numerator / denominator:.2f}×"

    for name in [name for name in seconds if isinstance(name, str)]:
        codes_per_second = args.batch_size * num_codes / seconds[name]
        print(f"| {name} | {seconds[name]:.3f} | {codes_per_second:,.0f} | {ratio(seconds[name], reference)} | "
              f"{ratio(generate, seconds[name])} |")
    if args.compile:
        print(f"(torch.compile: the first call, compiling, took {compile_seconds:.1f} s)")
    print()
    print("| batch | pipeline (decoded images) | s per batch | images/s | outside the denoiser |")
    print("|---:|---|---:|---:|---:|")
    for batch_size, name in [key for key in pictures if not key[1].startswith("denoiser") and key in seconds]:
        elapsed = seconds[(batch_size, name)]
        share = "—"
        bare = (batch_size, f"denoiser alone, {name.split(', ')[1].split()[0]} calls") if "steps" in name else None
        if bare in seconds:
            share = f"{1 - seconds[bare] / elapsed:.0%}"
        print(f"| {batch_size} | {name} | {elapsed:.3f} | {batch_size / elapsed:.2f} | {share} |")


if __name__ == "__main__":
    main()
