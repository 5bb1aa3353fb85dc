"""Faithfulness of text-to-image pipelines on the captioned scenes: do the pictures show what the captions say?

    python examples/evaluate_text_to_image.py --scenes_dir outputs/scenes --classifier outputs/scene-slot-classifier \
        --pipelines autoregressive=outputs/t2i-autoregressive diffusion=outputs/t2i-diffusion \
        --guidance_scales 1 3 5 --num_prompts 500 --output docs/text_to_image_faithfulness.json

For each pipeline and guidance scale, one image per caption of the test scenes (combinations seen in training) and of
the held-out scenes (combinations never seen) — and with `--rephrased`, of the test scenes captioned again in
templates training never used (`REPHRASED_*`: new word orders, "placed", "at the right") — each read by `vq_hub.evaluation.composition` (items by the slot
classifier, colours from pixels) against its caption, plus FID on the slot classifier's features against real scenes
of the same split. The first rows score the real scenes of those captions (the scorer's ceiling) and the last ones the
unconditional model (guidance scale 0: what chance agreement looks like). Prints a Markdown table; `--output` writes
the figures as JSON.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from vq_hub import VQPipeline
from vq_hub.evaluation import ImageClassifier, frechet_distance
from vq_hub.evaluation.composition import faithfulness, read_scenes
from vq_hub.evaluation.text_to_image import load_captioned_split
from vq_hub.utils.io import write_text_atomically

SPLITS = {"seen": "test", "held-out": "heldout"}
# Templates make_captioned_scenes.py never uses: other word orders and a few words no training caption has.
REPHRASED_SINGLE = ["{a} placed on the {side} side", "{a} at the {side}", "the {side} half holds {a}"]
REPHRASED_PAIR = ["on the right {b} and on the left {a}", "{a} at the left and {b} at the right",
                  "{a} placed left and {b} placed right"]  # at most 13 words: the shipped prior's text length
METRICS = ("items", "colours", "positions", "scenes")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes_dir", required=True, help="Output of make_captioned_scenes.py.")
    parser.add_argument("--classifier", required=True, help="The slot classifier (an ImageClassifier folder).")
    parser.add_argument("--pipelines", nargs="+", required=True, help="NAME=PATH of saved text-to-image pipelines.")
    parser.add_argument("--guidance_scales", type=float, nargs="+", default=[1.0, 3.0, 5.0])
    parser.add_argument("--num_prompts", type=int, default=500, help="Captions per split (the first ones); the "
                        "split's other scenes are the FID reference.")  # fmt: skip
    parser.add_argument("--num_steps", type=int, default=16, help="Denoising steps of diffusion pipelines.")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rephrased", action="store_true", help="Also score the test scenes captioned in templates "
                        "training never used (a third split, `rephrased`).")  # fmt: skip
    parser.add_argument("--output", help="Where to write the figures (JSON).")
    return parser.parse_args(argv)


def load_split(path: Path) -> tuple[torch.Tensor, list[str], list, list]:
    """`(images (N, 3, H, W) in [-1, 1], captions, items, colours)` of a scenes Parquet file."""
    split = load_captioned_split(path)
    return split.images, split.captions, split.items, split.colours


def rephrased_caption(items: list[str], colours: list[str], index: int) -> str:
    """A caption of the scene with slots `items` / `colours` (left, right; "" = empty) in the rephrased template
    `index` picks (cycling)."""
    named = [f"{'' if item.endswith('s') else 'a '}{colour} {item}" if item else None
             for item, colour in zip(items, colours)]  # fmt: skip
    if named[0] and named[1]:
        return REPHRASED_PAIR[index % len(REPHRASED_PAIR)].format(a=named[0], b=named[1])
    side = "left" if named[0] else "right"
    return REPHRASED_SINGLE[index % len(REPHRASED_SINGLE)].format(a=named[0] or named[1], side=side)


def read_all(images: torch.Tensor, classifier, palette: dict, batch_size: int):
    items, colours, features = [], [], []
    for start in range(0, len(images), batch_size):
        batch_items, batch_colours, batch_features = read_scenes(
            images[start : start + batch_size], classifier, palette
        )
        items += batch_items
        colours += batch_colours
        features.append(batch_features)
    return items, colours, torch.cat(features)


def generate(pipe: VQPipeline, captions: list[str], args: argparse.Namespace, guidance_scale: float) -> torch.Tensor:
    """One image per caption, `(N, 3, H, W)` in [-1, 1]; batch b is seeded with `seed + b`."""
    options = {"num_steps": args.num_steps} if hasattr(pipe, "scheduler") else {}
    images = []
    for index, start in enumerate(range(0, len(captions), args.batch_size)):
        output = pipe(prompt=captions[start : start + args.batch_size], guidance_scale=guidance_scale,
                      temperature=args.temperature, generator=torch.Generator().manual_seed(args.seed + index),
                      output_type="pt", **options)  # fmt: skip
        images.append(output.images * 2 - 1)
    return torch.cat(images)


def score(images, classifier, palette, expected, reference, batch_size) -> dict:
    items, colours, features = read_all(images, classifier, palette, batch_size)
    figures = faithfulness(items, colours, *expected)
    figures["fid"] = frechet_distance(reference, features)
    return figures


def markdown(rows: list[dict]) -> str:
    header = "| model | guidance | split | items | colours | positions | scenes | FID | images | s/image |"
    lines = [header, "|" + "---|" * 10]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['guidance_scale'] if row['guidance_scale'] is not None else '—'} | "
            f"{row['split']} | " + " | ".join(f"{100 * row[m]:.1f}%" for m in METRICS) + f" | {row['fid']:.2f} | "
            f"{row['num_images']} | {row.get('seconds_per_image', 0):.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    scenes = Path(args.scenes_dir)
    palette = json.loads((scenes / "scenes.json").read_text())["colours"]
    classifier = ImageClassifier.from_pretrained(args.classifier).eval()
    pipelines = dict(item.split("=", 1) for item in args.pipelines)
    rows, data = [], {}
    for split, name in SPLITS.items():
        images, captions, items, colours = load_split(scenes / f"{name}.parquet")
        if len(captions) <= args.num_prompts + 1:
            raise SystemExit(f"--num_prompts {args.num_prompts}: the {name} split has only {len(captions)} scenes")
        n = args.num_prompts
        _, _, reference = read_all(images[n:], classifier, palette, args.batch_size)
        data[split] = (captions[:n], (items[:n], colours[:n]), reference)
        rows.append({"model": "real scenes", "guidance_scale": None, "split": split,
                     **score(images[:n], classifier, palette, data[split][1], reference, args.batch_size)})  # fmt: skip
        if split == "seen" and args.rephrased:  # the same scenes and reference, new captions
            rephrased = [rephrased_caption(*slots, index) for index, slots in enumerate(zip(items[:n], colours[:n]))]
            data["rephrased"] = (rephrased, data[split][1], reference)
    for model, path in pipelines.items():
        pipe = VQPipeline.from_pretrained(path)
        pipe.set_progress_bar_config(disable=True)
        for guidance_scale in [*args.guidance_scales, 0.0]:
            for split, (captions, expected, reference) in data.items():
                start = time.perf_counter()
                images = generate(pipe, captions, args, guidance_scale)
                seconds = (time.perf_counter() - start) / len(captions)
                row = {"model": model, "guidance_scale": guidance_scale, "split": split,
                       **score(images, classifier, palette, expected, reference, args.batch_size),
                       "seconds_per_image": seconds}  # fmt: skip
                rows.append(row)
                print(markdown([row]).splitlines()[-1], flush=True)
    table = markdown(rows)
    print(table)
    if args.output:
        summary = {"rows": rows, "args": vars(args), "classifier": args.classifier, "table": table}
        write_text_atomically(Path(args.output), json.dumps(summary, indent=2))
    return rows


if __name__ == "__main__":
    main()
