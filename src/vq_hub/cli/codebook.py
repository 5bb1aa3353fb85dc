"""`vq-hub codebook`: one picture of a tokenizer's codebook — every code decoded as a tile, and with --images the
usage histogram (perplexity, dead codes) and the image patches behind the most used codes.

example:
  vq-hub codebook --model checkpoints/fashion-mnist-vqvae --images test.parquet --out codebook.png
"""

from pathlib import Path

from ._common import CommandError, load_images, load_tokenizer, positive_int
from .images import IMAGES_HELP, MODEL_HELP


def register(commands) -> None:
    parser = commands.add_parser("codebook", help="Draw a tokenizer's codebook: code tiles, usage, top-code patches.",
                                 description=__doc__)  # fmt: skip
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    parser.add_argument("--images", help=IMAGES_HELP + " Without it there is no usage: only the tiles, in code order.")
    parser.add_argument("--num-images", type=positive_int, default=2000, help="How many images to count codes "
                        "over, drawn across classes when the file has labels.")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="Seed of the draw of images.")
    parser.add_argument("--context", choices=("neutral", "uniform"), default="neutral",
                        help="Tile of a code: alone amid the code of a black image (neutral), or a grid filled with "
                        "it (uniform).")  # fmt: skip
    parser.add_argument("--max-tiles", type=positive_int, default=1024, help="Draw at most this many tiles (the most "
                        "used first) for very large codebooks.")  # fmt: skip
    parser.add_argument("--top-codes", type=positive_int, default=8, help="Rows of patches: the most used codes.")
    parser.add_argument("--out", default="codebook.png", help="The picture to write (PNG).")
    parser.set_defaults(run=run)


def run(args) -> str:
    from ..code_levels import DepthView, level_views
    from ..visualization import measure_usage, write_codebook_figure
    from ..visualization.codebook import binary_quantizer

    if Path(args.out).suffix.lower() != ".png":
        raise CommandError(f"--out {args.out}: give a .png file name")
    tokenizer = load_tokenizer(args.model)
    images = None
    if args.images:
        config = tokenizer.config
        images = load_images(args.images, config.sample_size, config.in_channels, args.num_images, args.seed)
    views = level_views(tokenizer)
    lines = []
    # A two-level tokenizer: one picture per level, <out>-top.png, <out>-bottom.png; a residual one: one per depth,
    # <out>-depth0.png, …, and <out> with them as rows.
    for level, model in views.items():
        out = Path(args.out)
        out = out if len(views) == 1 else out.with_name(f"{out.stem}-{level}{out.suffix}")
        usage = measure_usage(model, images) if images is not None else None
        write_codebook_figure(model, out, images, usage=usage, context=args.context, max_tiles=args.max_tiles,
                              num_top_codes=args.top_codes)  # fmt: skip
        what = "" if len(views) == 1 else f" ({level} level)"
        binary = binary_quantizer(model)
        drawn = "their bit planes drawn" if usage else "each bit's flip drawn"
        bits = "" if binary is None else f"; {binary.bits} bits per code, {drawn}"
        if usage is None:
            shown = min(model.codebook_size, args.max_tiles)
            lines.append(f"wrote {out}{what}: {shown} code tiles in code order (give --images for usage){bits}")
        else:
            lines.append(f"wrote {out}{what}: {len(images)} images, perplexity {usage.perplexity:.1f} / "
                         f"{model.codebook_size}, usage {usage.usage:.0%}, "
                         f"{len(usage.dead_codes)} dead codes{bits}")  # fmt: skip
    if all(isinstance(model, DepthView) for model in views.values()):  # a residual tokenizer: its depths as rows
        pages = [Path(args.out).with_name(f"{Path(args.out).stem}-{level}.png") for level in views]
        stack_pictures(pages, Path(args.out))
        lines.append(f"wrote {args.out}: the {len(pages)} depths' pictures above as rows, depth 0 on top")
    return "\n".join(lines)


def stack_pictures(pages: list[Path], out: Path) -> None:
    """One picture of `pages` one below the other (left-aligned on white), written atomically to `out`."""
    from PIL import Image

    from ..utils.io import atomic_file

    images = [Image.open(page).convert("RGB") for page in pages]
    stacked = Image.new("RGB", (max(image.width for image in images), sum(image.height for image in images)), "white")
    top = 0
    for image in images:
        stacked.paste(image, (0, top))
        top += image.height
    with atomic_file(out) as temporary:
        stacked.save(temporary, format="PNG")
