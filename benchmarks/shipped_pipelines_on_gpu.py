"""Images/s of the shipped Fashion-MNIST pipelines on one device, batch 1,000 (100 per class), guidance 2: the
autoregressive pipeline eagerly (dynamic and static KV cache) and with its decoding step recorded as a CUDA graph
(codes checked equal to the static-cache sampler's), and the diffusion pipeline at 8 steps.

    python benchmarks/shipped_pipelines_on_gpu.py [--device cuda] [--batch-size 1000] [--repeats 3]
"""

import argparse
import time
from pathlib import Path

import torch

from vq_hub import VQPipeline

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    labels = [index % 10 for index in range(args.batch_size)]

    autoregressive = VQPipeline.from_pretrained(CHECKPOINTS / "fashion-mnist-autoregressive").to(device)
    diffusion = VQPipeline.from_pretrained(CHECKPOINTS / "fashion-mnist-diffusion").to(device)
    for pipe in (autoregressive, diffusion):
        pipe.set_progress_bar_config(disable=True)

    def sample(pipe, **settings):
        def run():
            for name, value in settings.items():
                setattr(pipe, name, value)
            generator = torch.Generator(device).manual_seed(0)
            kwargs = {"num_steps": 8} if pipe is diffusion else {}
            output = pipe(class_labels=labels, guidance_scale=2.0, generator=generator, output_type="pt", **kwargs)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return output

        return run

    runs = {
        "autoregressive, dynamic KV cache (default)": sample(autoregressive, cache_implementation="dynamic",
                                                             cuda_graphs=False),
        "autoregressive, static KV cache": sample(autoregressive, cache_implementation="static", cuda_graphs=False),
        "autoregressive, CUDA graph step (`pipe.cuda_graphs = True`)": sample(autoregressive, cuda_graphs=True),
        "diffusion, 8 steps": sample(diffusion),
    }  # fmt: skip
    outputs = {}
    for name, run in list(runs.items()):  # warm-up, and the outputs compared below; a failure is reported
        try:
            outputs[name] = run()
        except Exception as error:  # noqa: BLE001 (the other rows must still be timed)
            print(f"{name}: FAILED ({type(error).__name__}: {error})")
            del runs[name]
    graphed_name = "autoregressive, CUDA graph step (`pipe.cuda_graphs = True`)"
    if graphed_name not in outputs:
        outputs[graphed_name] = None
    static = outputs.get("autoregressive, static KV cache")
    same = None not in (outputs[graphed_name], static) and torch.equal(static.codes, outputs[graphed_name].codes)
    seconds = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {device} ({name}), torch {torch.__version__}; batch {args.batch_size}, guidance 2, median of "
          f"{args.repeats}")
    print("\n| pipeline | s per batch | images/s |\n|---|---:|---:|")
    for key, values in seconds.items():
        median = sorted(values)[len(values) // 2]
        print(f"| {key} | {median:.2f} | {args.batch_size / median:,.0f} |")
    print(f"\nCUDA-graph codes equal to the static-cache sampler's: {same}")
    if not same:
        raise SystemExit("the recorded decoding step sampled other codes than the eager one")


if __name__ == "__main__":
    main()
