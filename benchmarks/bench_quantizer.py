"""Nearest-code search beside its limit (the bare distance GEMM) and beside diffusers' and vector-quantize-pytorch's.

Same N latent vectors, codebook size K and dimension D for all, every figure of a row timed round-robin in one run:
- the limit: one `torch.mm` of the N×D latents by the D×K codebook into a preallocated N×K output (no argmin, no
  allocation), which any exact float32 search must at least compute;
- forward+backward of a gradient-trained quantizer step, vq_hub beside diffusers' `VectorQuantizer` (its only mode);
- tokenize only (codes of latents, no gradient): vq_hub's `latents_to_codes` beside diffusers' forward under
  `torch.no_grad()`;
- forward+backward with EMA codebooks, vq_hub beside `vector-quantize-pytorch`'s `VectorQuantize` (its default).
Peak memory is measured above the memory held before the step: `torch.cuda.max_memory_allocated` on GPU, the
process's peak resident set (VmHWM, reset through /proc/self/clear_refs) on Linux CPUs. On CPU, memory is measured
in one child process with a fixed glibc mmap threshold, so large tensors go back to the system when freed
(otherwise the heap keeps them and peaks read as zero), while times are measured in this process.

    pip install vector-quantize-pytorch   # benchmark only, not a vq_hub dependency
    python benchmarks/bench_quantizer.py [--device cuda] [--codebook-sizes 1024 16384 65536] [--dims 8 64 256]
"""

import argparse
import gc
import json
import os
import subprocess
import sys
from collections.abc import Callable

import torch
from timing import median_seconds

from vq_hub.quantizers import VectorQuantizer

GEMM = "bare GEMM"


def build_implementations(codebook_size: int, dim: int) -> dict[str, Callable[[], tuple[torch.nn.Module, Callable]]]:
    """name → factory returning (module, step) where step(latents) runs forward and returns a scalar to backprop,
    or None for a step that runs without gradient."""

    def ours(use_ema: bool):
        module = VectorQuantizer(codebook_size, dim, use_ema=use_ema)
        return module, lambda x: (lambda out: out.quantized.square().mean() + out.loss)(module(x))

    def ours_tokenize():
        module = VectorQuantizer(codebook_size, dim)
        return module, lambda x: _no_grad(lambda: module.latents_to_codes(x.detach()))

    def diffusers_vq(tokenize_only: bool = False):
        from diffusers.models.autoencoders.vae import VectorQuantizer as DiffusersVectorQuantizer

        module = DiffusersVectorQuantizer(codebook_size, dim, beta=0.25, legacy=False)
        if tokenize_only:
            return module, lambda x: _no_grad(lambda: module(x)[2][2])
        return module, lambda x: (lambda out: out[0].square().mean() + out[1])(module(x))

    def lucidrains(use_ema: bool):
        from vector_quantize_pytorch import VectorQuantize

        options = dict(decay=0.99) if use_ema else dict(ema_update=False, learnable_codebook=True)
        module = VectorQuantize(
            dim=dim, codebook_size=codebook_size, commitment_weight=0.25, accept_image_fmap=True, **options
        )
        return module, lambda x: (lambda out: out[0].square().mean() + out[2])(module(x))

    def bare_gemm():
        codebook = torch.nn.Parameter(torch.randn(codebook_size, dim))
        module = torch.nn.Module()
        module.codebook = codebook
        output = {}

        def step(x):
            vectors = x.detach().permute(0, 2, 3, 1).reshape(-1, dim)
            if "scores" not in output:
                output["scores"] = torch.empty(vectors.shape[0], codebook_size, device=x.device)
            torch.mm(vectors, codebook.detach().t(), out=output["scores"])

        return module, step

    return {
        GEMM: bare_gemm,
        "vq_hub fwd+bwd": lambda: ours(False),
        "diffusers fwd+bwd": diffusers_vq,
        "vq_hub tokenize": ours_tokenize,
        "diffusers tokenize": lambda: diffusers_vq(tokenize_only=True),
        "vq_hub EMA fwd+bwd": lambda: ours(True),
        "vector-quantize-pytorch EMA fwd+bwd": lambda: lucidrains(True),
    }


def _no_grad(function: Callable[[], object]) -> None:
    with torch.no_grad():
        function()


class PeakMemory:
    """Peak memory (bytes) above the level at `reset()`."""

    def __init__(self, device: torch.device):
        self.device = device

    def reset(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.baseline = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current resident set
            self.baseline = self._proc_status("VmRSS")

    def peak(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated() - self.baseline
        return self._proc_status("VmHWM") - self.baseline

    @staticmethod
    def _proc_status(field: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(f"{field} not in /proc/self/status")


def prepare(factory, latents: torch.Tensor):
    """Build one implementation and return a closure running one step (already warmed up)."""
    module, step = factory()
    module.to(latents.device).train()
    inputs = latents.clone().requires_grad_(True)

    def run() -> None:
        loss = step(inputs)
        if loss is not None:
            loss.backward()
        inputs.grad = None
        module.zero_grad(set_to_none=True)
        if latents.device.type == "cuda":
            torch.cuda.synchronize()

    run()
    return run


def peak_memory_mib(run, memory: PeakMemory) -> float:
    memory.reset()
    run()
    return memory.peak() / 2**20


def cpu_peak_memory_in_child(argv: list[str]) -> dict[str, float]:
    """Run this script with `--memory-only` under a fixed mmap threshold and collect its peaks."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "1048576"}
    result = subprocess.run(
        [sys.executable, __file__, *argv, "--memory-only"], env=env, check=True, capture_output=True, text=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--num-vectors", type=int, default=8192)
    parser.add_argument("--codebook-sizes", type=int, nargs="+", default=[1024, 16384, 65536])
    parser.add_argument("--dims", type=int, nargs="+", default=[8, 64, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.num_vectors % 256:
        parser.error("--num-vectors must be a multiple of 256 (latents are laid out as 16×16 grids)")

    device = torch.device(args.device)
    torch.manual_seed(0)
    batch, side = args.num_vectors // 256, 16
    memory = PeakMemory(device)
    measure_memory_here = device.type == "cuda" or args.memory_only
    child_peaks = {} if measure_memory_here else cpu_peak_memory_in_child(sys.argv[1:])

    if args.memory_only:
        peaks = {}
        for codebook_size in args.codebook_sizes:
            for dim in args.dims:
                latents = torch.randn(batch, dim, side, side, device=device)
                for name, factory in build_implementations(codebook_size, dim).items():
                    try:
                        peaks[f"{codebook_size}/{dim}/{name}"] = peak_memory_mib(prepare(factory, latents), memory)
                    except ImportError:
                        pass
        print(json.dumps(peaks))
        return

    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} N={args.num_vectors}")
    rows = []
    for codebook_size in args.codebook_sizes:
        for dim in args.dims:
            latents = torch.randn(batch, dim, side, side, device=device)
            runs, peaks = {}, {}
            for name, factory in build_implementations(codebook_size, dim).items():
                try:
                    runs[name] = prepare(factory, latents)
                except ImportError as error:
                    print(f"K={codebook_size} D={dim} {name}: skipped ({error})")
                    continue
                key = f"{codebook_size}/{dim}/{name}"
                peaks[name] = child_peaks[key] if key in child_peaks else peak_memory_mib(runs[name], memory)
            seconds = median_seconds(runs, args.repeats)
            rows.append((codebook_size, dim, seconds, peaks))
            print(f"K={codebook_size} D={dim} done", file=sys.stderr)
            del runs
    print_tables(rows)


def print_tables(rows: list[tuple[int, int, dict[str, float], dict[str, float]]]) -> None:
    """The search against its limit and diffusers (time), then the EMA comparison and peak memory."""

    def ratio(numerator: float | None, denominator: float | None) -> str:
        return f"{numerator / denominator:.2f}x" if numerator and denominator else "—"

    def ms(value: float | None) -> str:
        return f"{value * 1e3:.1f}" if value is not None else "—"

    print("\nnearest-code search, ms per call (ratios: > 1 after '/ vq_hub' means vq_hub is faster)")
    print("| K | D | bare GEMM | vq_hub fwd+bwd | / GEMM | diffusers fwd+bwd | / vq_hub "
          "| vq_hub tokenize | / GEMM | diffusers tokenize | / vq_hub |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for codebook_size, dim, seconds, _ in rows:
        get = seconds.get
        print(
            f"| {codebook_size:,} | {dim} | {ms(get(GEMM))} | {ms(get('vq_hub fwd+bwd'))} "
            f"| {ratio(get('vq_hub fwd+bwd'), get(GEMM))} | {ms(get('diffusers fwd+bwd'))} "
            f"| {ratio(get('diffusers fwd+bwd'), get('vq_hub fwd+bwd'))} | {ms(get('vq_hub tokenize'))} "
            f"| {ratio(get('vq_hub tokenize'), get(GEMM))} | {ms(get('diffusers tokenize'))} "
            f"| {ratio(get('diffusers tokenize'), get('vq_hub tokenize'))} |"
        )
    print("\nEMA codebooks (fwd+bwd, ms) and peak extra memory of a fwd+bwd step (MiB)")
    print("| K | D | vq_hub EMA | vector-quantize-pytorch EMA | / vq_hub | vq_hub MiB | diffusers MiB "
          "| vector-quantize-pytorch MiB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for codebook_size, dim, seconds, peaks in rows:
        ours, theirs = seconds.get("vq_hub EMA fwd+bwd"), seconds.get("vector-quantize-pytorch EMA fwd+bwd")
        mib = {name: f"{peaks[name]:.0f}" if name in peaks else "—" for name in
               ("vq_hub fwd+bwd", "diffusers fwd+bwd", "vector-quantize-pytorch EMA fwd+bwd")}  # fmt: skip
        print(
            f"| {codebook_size:,} | {dim} | {ms(ours)} | {ms(theirs)} | {ratio(theirs, ours)} "
            f"| {' | '.join(mib.values())} |"
        )


if __name__ == "__main__":
    main()
