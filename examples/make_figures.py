"""Draw the README's figures from trained pipelines: class-conditional sample grids, completions and the reverse
process of the diffusion prior.

    python examples/make_figures.py --autoregressive outputs/fashion-prior --diffusion outputs/fashion-diffusion \
        --images ../shared/data/fashion_mnist/test.parquet --output_dir docs --prefix fashion
"""

import argparse
from pathlib import Path

import torch

from vq_hub import VQPipeline
from vq_hub.data import image_grid, image_to_tensor, load_parquet_images, save_gif


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--autoregressive", help="A saved VQAutoregressivePipeline.")
    parser.add_argument("--diffusion", help="A saved VQDiscreteDiffusionPipeline.")
    parser.add_argument("--images", help="Parquet file with `image` and `label` columns, for the completions.")
    parser.add_argument("--output_dir", default="docs")
    parser.add_argument("--prefix", default="samples", help="File name prefix.")
    parser.add_argument("--images_per_class", type=int, default=8)
    parser.add_argument("--guidance_scale", type=float, default=2.0)
    parser.add_argument("--diffusion_steps", type=int, nargs="+", default=[8, 16, 50])
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def one_image_per_class(pipe: VQPipeline, parquet: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The first test image of each class, as a batch in [-1, 1] and its labels."""
    dataset = load_parquet_images(parquet)
    chosen = {}
    for index, label in enumerate(dataset["label"]):
        chosen.setdefault(label, index)
        if len(chosen) == pipe.vocabulary.num_classes:
            break
    labels = torch.tensor(sorted(chosen))
    size, channels = pipe.resolution[0], pipe.vqvae.config.in_channels
    images = torch.stack([image_to_tensor(dataset[chosen[int(label)]]["image"], size, channels) for label in labels])
    return images, labels


def completion_figure(pipe, images: torch.Tensor, labels: torch.Tensor, seed: int, guidance_scale: float):
    """Rows: the originals, then completions keeping half the rows, a quarter of the rows and only the first code."""
    height, width = pipe.code_grid_size
    codes = pipe.vqvae.tokenize(images)
    rows = [images]
    for kept in (height // 2 * width, height // 4 * width, 1):
        generator = torch.Generator().manual_seed(seed)
        completed = pipe(prefix_codes=codes.flatten(1)[:, :kept], class_labels=labels, guidance_scale=guidance_scale,
                         generator=generator, output_type="pt").images  # fmt: skip
        rows.append(completed * 2 - 1)
    return image_grid(rows)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if args.autoregressive:
        pipe = VQPipeline.from_pretrained(args.autoregressive)
        generator = torch.Generator().manual_seed(args.seed)
        grid = pipe.sample_grid(args.images_per_class, guidance_scale=args.guidance_scale, generator=generator)
        written.append(output_dir / f"{args.prefix}_autoregressive_samples.png")
        grid.save(written[-1])
        if args.images:
            images, labels = one_image_per_class(pipe, args.images)
            written.append(output_dir / f"{args.prefix}_autoregressive_completions.png")
            completion_figure(pipe, images, labels, args.seed, args.guidance_scale).save(written[-1])
    if args.diffusion:
        pipe = VQPipeline.from_pretrained(args.diffusion)
        for steps in args.diffusion_steps:
            generator = torch.Generator().manual_seed(args.seed)
            grid = pipe.sample_grid(args.images_per_class, num_steps=steps, guidance_scale=args.guidance_scale,
                                    generator=generator)  # fmt: skip
            written.append(output_dir / f"{args.prefix}_diffusion_{steps}_steps.png")
            grid.save(written[-1])
        labels = list(range(min(pipe.vocabulary.num_classes, 10))) or None
        output = pipe(num_steps=max(args.diffusion_steps[:2]), class_labels=labels, batch_size=len(labels or [0] * 8),
                      guidance_scale=args.guidance_scale, generator=torch.Generator().manual_seed(args.seed),
                      return_intermediates=True)  # fmt: skip
        written.append(save_gif(output.intermediates, output_dir / f"{args.prefix}_diffusion_reverse.gif"))
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
