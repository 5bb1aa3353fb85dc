"""FID falls as a prior trains: the shipped Fashion-MNIST diffusion pipeline against the same pipeline with its
denoiser at initialisation (step 0), scored by the shipped classifier. For a curve along a run, train with
`--feature_network` (examples/train_diffusion.py logs sample FID at every validation).

    python benchmarks/fid_before_after_training.py --num-images 200 --seeds 0 1
"""

import argparse
from pathlib import Path

import torch
from transformers import AutoModelForMaskedLM

from vq_hub import VQDiscreteDiffusionPipeline, VQPipeline
from vq_hub.evaluation import evaluate_pipeline, load_feature_network

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-images", type=int, default=200)
    parser.add_argument("--num-steps", type=int, default=8)
    parser.add_argument("--guidance-scale", type=float, default=2.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args(argv)
    trained = VQPipeline.from_pretrained(ROOT / "checkpoints" / "fashion-mnist-diffusion")
    torch.manual_seed(0)
    untrained = VQDiscreteDiffusionPipeline(trained.vqvae, AutoModelForMaskedLM.from_config(trained.denoiser.config),
                                            trained.scheduler)  # fmt: skip
    network = load_feature_network(ROOT / "checkpoints" / "fashion-mnist-classifier")
    print("| denoiser | training steps | seed | N | FID | precision | recall | class acc |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, steps, pipe in [("initialisation", 0, untrained), ("shipped", 2000, trained)]:
        for seed in args.seeds:
            r = evaluate_pipeline(pipe, network, num_images=args.num_images, seed=seed, progress=False,
                                  num_steps=args.num_steps, guidance_scale=args.guidance_scale)  # fmt: skip
            print(f"| {name} | {steps:,} | {seed} | {args.num_images} | {r['fid']:.2f} | {r['precision']:.3f} | "
                  f"{r['recall']:.3f} | {r['class_accuracy']:.3f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
