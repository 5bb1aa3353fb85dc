"""Forward+backward time and peak memory of vq_hub's VectorQuantizer beside diffusers' and vector-quantize-pytorch's.

Same N latent vectors, codebook size K and dimension D for all; each row is timed in the same run. Two comparisons:
gradient-trained codebooks (vq_hub vs diffusers, which only has that mode) and EMA codebooks (vq_hub vs
vector-quantize-pytorch, whose default is EMA). Peak memory is measured above the memory held before the step:
`torch.cuda.max_memory_allocated` on GPU, the process's peak resident set (VmHWM, reset through
/proc/self/clear_refs) on Linux CPUs. On CPU, memory is measured in one child process with a fixed glibc mmap
threshold, so large tensors go back to the system when freed (otherwise the heap keeps them and peaks read as
zero), while times are measured in this process with the default allocator.

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


def build_implementations(codebook_size: int, dim: int) -> dict[str, Callable[[], tuple[torch.nn.Module, Callable]]]:
    """name → factory returning (module, step) where step(latents) runs forward and returns a scalar to backprop."""

    def ours(use_ema: bool):
        module = VectorQuantizer(codebook_size, dim, use_ema=use_ema)
        return module, lambda x: (lambda out: out.quantized.square().mean() + out.loss)(module(x))

    def diffusers_vq():
        from diffusers.models.autoencoders.vae import VectorQuantizer as DiffusersVectorQuantizer

        module = DiffusersVectorQuantizer(codebook_size, dim, beta=0.25, legacy=False)
        return module, lambda x: (lambda out: out[0].square().mean() + out[1])(module(x))

    def lucidrains(use_ema: bool):
        from vector_quantize_pytorch import VectorQuantize

        options = dict(decay=0.99) if use_ema else dict(ema_update=False, learnable_codebook=True)
        module = VectorQuantize(
            dim=dim, codebook_size=codebook_size, commitment_weight=0.25, accept_image_fmap=True, **options
        )
        return module, lambda x: (lambda out: out[0].square().mean() + out[2])(module(x))

    return {
        "vq_hub (grad)": lambda: ours(False),
        "diffusers (grad)": diffusers_vq,
        "vq_hub (EMA)": lambda: ours(True),
        "vector-quantize-pytorch (EMA)": lambda: lucidrains(True),
    }


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
    """Build one implementation and return a closure running one forward+backward step (already warmed up)."""
    module, step = factory()
    module.to(latents.device).train()
    inputs = latents.clone().requires_grad_(True)

    def run() -> None:
        step(inputs).backward()
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
    header = f"{'K':>6} {'D':>4}  {'implementation':<30} {'ms/step':>9} {'peak MiB':>9} {'time ratio':>11} {'mem ratio':>10}"
    print(header)
    print("-" * len(header))
    for codebook_size in args.codebook_sizes:
        for dim in args.dims:
            latents = torch.randn(batch, dim, side, side, device=device)
            runs, peaks = {}, {}
            for name, factory in build_implementations(codebook_size, dim).items():
                try:
                    runs[name] = prepare(factory, latents)
                except ImportError as error:
                    print(f"{codebook_size:>6} {dim:>4}  {name:<30} skipped: {error}")
                    continue
                key = f"{codebook_size}/{dim}/{name}"
                peaks[name] = child_peaks[key] if key in child_peaks else peak_memory_mib(runs[name], memory)
            seconds = median_seconds(runs, args.repeats)
            for name in runs:
                reference = "vq_hub (EMA)" if "EMA" in name else "vq_hub (grad)"
                print(
                    f"{codebook_size:>6} {dim:>4}  {name:<30} {seconds[name] * 1e3:>9.1f} {peaks[name]:>9.0f} "
                    f"{seconds[name] / seconds[reference]:>10.2f}x "
                    f"{max(peaks[name], 1) / max(peaks[reference], 1):>9.2f}x"
                )
            del runs
    print("ratios: the row's figure divided by vq_hub's in the same mode (above 1 = vq_hub is faster / smaller);")
    print("memory ratios floor both sides at 1 MiB")


if __name__ == "__main__":
    main()
