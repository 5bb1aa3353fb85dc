"""Figures of text-to-image pipelines: a row of samples per prompt, the prompt written beside it.

    python examples/make_text_figures.py --pipeline outputs/t2i-autoregressive --output docs/text_to_image_ar.png \
        --prompts "a red sneaker to the left of a blue bag" "a green bag on the right" --guidance_scale 3

Prompts marked with a leading `*` are drawn in another colour (e.g. held-out combinations); the mark is not part of
the prompt.
"""

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from vq_hub import VQPipeline
from vq_hub.data import tensor_to_images
from vq_hub.utils.io import atomic_file


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipeline", required=True, help="A saved text-to-image pipeline.")
    parser.add_argument("--prompts", nargs="+", required=True, help="A row each; a leading * marks a held-out one.")
    parser.add_argument("--output", required=True, help="The PNG to write.")
    parser.add_argument("--images_per_prompt", type=int, default=6)
    parser.add_argument("--guidance_scale", type=float, default=3.0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--num_steps", type=int, default=16, help="Denoising steps of a diffusion pipeline.")
    parser.add_argument("--scale", type=int, default=2, help="Pixels per image pixel.")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def labelled_grid(rows: list[list[Image.Image]], labels: list[str], marked: list[bool], scale: int = 2,
                  padding: int = 4) -> Image.Image:  # fmt: skip
    """Rows of images, each row's label on its left (marked labels in orange)."""
    font = ImageFont.load_default()
    width, height = rows[0][0].width * scale, rows[0][0].height * scale
    label_width = max(int(font.getlength(label)) for label in labels) + 2 * padding
    columns = max(len(row) for row in rows)
    grid = Image.new("RGB", (label_width + columns * (width + padding) + padding,
                             len(rows) * (height + padding) + padding), "white")  # fmt: skip
    draw = ImageDraw.Draw(grid)
    for r, (row, label, mark) in enumerate(zip(rows, labels, marked)):
        top = padding + r * (height + padding)
        draw.text((padding, top + height // 2), label, fill=(200, 90, 0) if mark else (0, 0, 0), font=font, anchor="lm")
        for c, image in enumerate(row):
            grid.paste(image.convert("RGB").resize((width, height), Image.Resampling.NEAREST),
                       (label_width + c * (width + padding), top))  # fmt: skip
    return grid


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    pipe = VQPipeline.from_pretrained(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    options = {"num_steps": args.num_steps} if hasattr(pipe, "scheduler") else {}
    marked = [prompt.startswith("*") for prompt in args.prompts]
    prompts = [prompt.lstrip("*").strip() for prompt in args.prompts]
    rows = []
    for index, prompt in enumerate(prompts):
        output = pipe(prompt=prompt, num_images_per_prompt=args.images_per_prompt, guidance_scale=args.guidance_scale,
                      temperature=args.temperature, generator=torch.Generator().manual_seed(args.seed + index),
                      output_type="pt", **options)  # fmt: skip
        rows.append(tensor_to_images(output.images * 2 - 1))
    grid = labelled_grid(rows, prompts, marked, args.scale)
    with atomic_file(args.output) as temporary:
        grid.save(temporary, format="PNG")
    print(f"wrote {args.output}: {len(prompts)} prompts × {args.images_per_prompt} samples", flush=True)
    return Path(args.output)


if __name__ == "__main__":
    main()
