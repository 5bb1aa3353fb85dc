"""`vq-hub`: generate, reconstruct, tokenize, detokenize and inspect from the command line.

Errors are one line on stderr and a non-zero exit code; `--debug` shows the traceback.
"""

import argparse
import json
import sys
from pathlib import Path

CLASSES_HELP = "Class label(s) for a class-conditional prior (default: one row per class)."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vq-hub", description="Discrete image tokenizers and priors over their codes."
    )
    parser.add_argument("--debug", action="store_true", help="Show the full traceback on errors.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    generate = commands.add_parser(
        "generate", help="Sample images with a saved pipeline (autoregressive or diffusion)."
    )
    generate.add_argument("--model", required=True, help="A saved pipeline folder or Hub repository.")
    generate.add_argument("--num-steps", type=int, help="Denoising steps (diffusion pipelines only).")
    generate.add_argument("--class", dest="class_labels", type=int, nargs="+", help=CLASSES_HELP)
    generate.add_argument("--num-images", type=int, default=8, help="Images per class (or in all, unconditional).")
    generate.add_argument("--guidance-scale", type=float, default=2.0)
    generate.add_argument("--temperature", type=float, default=1.0)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--out", default="samples.png", help="Where to write the grid (one row per class).")
    generate.add_argument("--gif", help="Also write the reverse process as an animated GIF (diffusion pipelines).")

    reconstruct = commands.add_parser("reconstruct", help="Tokenize and decode images; print the PSNR.")
    reconstruct.add_argument("--model", required=True, help="A tokenizer folder (or a pipeline: its vqvae).")
    reconstruct.add_argument("--images", required=True, help="A folder of images or a Parquet file with `image`.")
    reconstruct.add_argument("--num-images", type=int, default=8)
    reconstruct.add_argument("--out", default="reconstructions.png", help="Originals above reconstructions.")

    tokenize = commands.add_parser("tokenize", help="Images → a .npy file of code grids (N, h, w).")
    tokenize.add_argument("--model", required=True, help="A tokenizer folder (or a pipeline: its vqvae).")
    tokenize.add_argument("--images", required=True, help="A folder of images or a Parquet file with `image`.")
    tokenize.add_argument("--num-images", type=int, help="At most this many images.")
    tokenize.add_argument("--out", default="codes.npy")

    detokenize = commands.add_parser("detokenize", help="A .npy file of code grids → a grid picture.")
    detokenize.add_argument("--model", required=True, help="A tokenizer folder (or a pipeline: its vqvae).")
    detokenize.add_argument("--codes", required=True, help="A .npy file of integer codes (N, h, w).")
    detokenize.add_argument("--out", default="decoded.png")

    info = commands.add_parser("info", help="Config, codebook, grid and parameter counts of a saved model.")
    info.add_argument("path", help="A tokenizer or pipeline folder (or Hub repository).")
    return parser


class CommandError(Exception):
    """An error the user can fix; printed as one line."""


def load_tokenizer(path: str):
    """A `VQVAEModel` from a tokenizer folder, or the `vqvae` of a pipeline folder."""
    from .models.vq_model import VQVAEModel

    folder = Path(path)
    if not folder.exists():
        raise CommandError(f"--model {path}: no such folder")
    subfolder = "vqvae" if (folder / "model_index.json").is_file() else None
    if not (folder / (subfolder or "") / "config.json").is_file():
        raise CommandError(f"--model {path}: not a tokenizer folder (no config.json) or a pipeline folder")
    return VQVAEModel.from_pretrained(folder, subfolder=subfolder).eval()


def load_images(source: str, resolution: int, channels: int, limit: int | None):
    """`(N, C, H, W)` images in [-1, 1] from a Parquet file with an `image` column or an image folder."""
    import torch
    from PIL import Image

    from .data import image_to_tensor, load_parquet_images

    path = Path(source)
    if path.is_file() and path.suffix == ".parquet":
        dataset = load_parquet_images(path)
        if "image" not in dataset.column_names:
            raise CommandError(f"--images {source}: the Parquet file has no `image` column ({dataset.column_names})")
        count = len(dataset) if limit is None else min(limit, len(dataset))
        images = [dataset[i]["image"] for i in range(count)]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp"))
        images = [Image.open(p) for p in files[:limit]]
    else:
        raise CommandError(f"--images {source}: expected a folder of images or a .parquet file")
    if not images:
        raise CommandError(f"--images {source}: no images found")
    return torch.stack([image_to_tensor(image, resolution, channels) for image in images])


def run_generate(args) -> str:
    import torch

    from .data import save_gif
    from .pipelines import VQDiscreteDiffusionPipeline, VQPipeline

    if not Path(args.model).exists() and args.model.count("/") != 1:
        raise CommandError(f"--model {args.model}: no such folder (nor a Hub id of the form owner/name)")
    pipe = VQPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    is_diffusion = isinstance(pipe, VQDiscreteDiffusionPipeline)
    if args.num_steps is not None and not is_diffusion:
        raise CommandError(f"--num-steps applies to diffusion pipelines; {args.model} holds a {type(pipe).__name__}")
    if args.gif and not is_diffusion:
        raise CommandError(f"--gif shows a diffusion pipeline's reverse process; {args.model} holds a "
                           f"{type(pipe).__name__}")  # fmt: skip
    num_classes = pipe.vocabulary.num_classes
    if args.class_labels and num_classes == 0:
        raise CommandError(f"--class: {args.model} holds an unconditional prior")
    for label in args.class_labels or []:
        if not 0 <= label < num_classes:
            raise CommandError(f"--class {label}: labels of this prior lie in [0, {num_classes - 1}]")
    options = dict(guidance_scale=args.guidance_scale, temperature=args.temperature)
    if is_diffusion:
        options["num_steps"] = args.num_steps
    generator = torch.Generator().manual_seed(args.seed)
    grid = pipe.sample_grid(args.num_images, class_labels=args.class_labels, generator=generator, **options)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out)
    message = f"wrote {args.out}"
    if args.gif:
        labels = args.class_labels or (list(range(num_classes)) if num_classes else None)
        generator = torch.Generator().manual_seed(args.seed)
        batch_size = len(labels) if labels else args.num_images
        output = pipe(batch_size=batch_size, class_labels=labels, generator=generator, return_intermediates=True,
                      **options)  # fmt: skip
        save_gif(output.intermediates, args.gif)
        message += f" and {args.gif}"
    return message


def run_reconstruct(args) -> str:
    import torch

    from .data import image_grid
    from .metrics import psnr

    model = load_tokenizer(args.model)
    images = load_images(args.images, model.config.sample_size, model.config.in_channels, args.num_images)
    with torch.no_grad():
        reconstructions = model.detokenize(model.tokenize(images)).clamp(-1, 1)
    image_grid([images, reconstructions]).save(args.out)
    return f"wrote {args.out}: {len(images)} images, PSNR {float(psnr(reconstructions, images)):.2f} dB"


def run_tokenize(args) -> str:
    import numpy as np

    model = load_tokenizer(args.model)
    images = load_images(args.images, model.config.sample_size, model.config.in_channels, args.num_images)
    codes = model.tokenize(images).numpy()
    np.save(args.out, codes.astype(np.int16 if model.codebook_size <= 32768 else np.int32))
    return f"wrote {args.out}: codes of shape {codes.shape}, values in [0, {model.codebook_size - 1}]"


def run_detokenize(args) -> str:
    import numpy as np
    import torch

    from .data import image_grid

    model = load_tokenizer(args.model)
    if not Path(args.codes).is_file():
        raise CommandError(f"--codes {args.codes}: no such file")
    codes = np.load(args.codes)
    if codes.ndim == 2:
        codes = codes[None]
    if codes.ndim != 3 or not np.issubdtype(codes.dtype, np.integer):
        raise CommandError(f"--codes {args.codes}: expected integer codes (N, h, w), got {codes.dtype} {codes.shape}")
    if codes.min() < 0 or codes.max() >= model.codebook_size:
        raise CommandError(f"--codes {args.codes}: values must lie in [0, {model.codebook_size - 1}] for this "
                           f"tokenizer, got [{codes.min()}, {codes.max()}]")  # fmt: skip
    with torch.no_grad():
        images = model.detokenize(torch.from_numpy(codes.astype(np.int64))).clamp(-1, 1)
    image_grid([images]).save(args.out)
    return f"wrote {args.out}: {len(images)} images of {images.shape[-2]}×{images.shape[-1]}"


def run_info(args) -> str:
    folder = Path(args.path)
    if not folder.is_dir():
        raise CommandError(f"{args.path}: no such folder")
    index = folder / "model_index.json"
    lines = []
    if index.is_file():
        from .pipelines import VQPipeline

        pipe = VQPipeline.from_pretrained(folder)
        prior = getattr(pipe, pipe.prior_component)
        lines += [
            f"pipeline: {type(pipe).__name__}",
            f"prior: {type(prior).__name__}, {sum(p.numel() for p in prior.parameters()):,} parameters",
            f"classes: {pipe.vocabulary.num_classes or 'unconditional'}",
        ]
        if hasattr(pipe, "scheduler"):
            config = pipe.scheduler.config
            lines.append(f"scheduler: {config.corruption} corruption, {config.num_train_timesteps} timesteps, "
                         f"{config.schedule} schedule")  # fmt: skip
        tokenizer = pipe.vqvae
    else:
        tokenizer = load_tokenizer(str(folder))
    size = tokenizer.config.sample_size
    grid = tokenizer.code_grid_size(size, size)
    lines += [
        f"tokenizer: VQVAEModel ({tokenizer.config.quantizer_type} quantizer), "
        f"{sum(p.numel() for p in tokenizer.parameters()):,} parameters",
        f"codebook size: {tokenizer.codebook_size}",
        f"images: {tokenizer.config.in_channels}×{size}×{size} → codes {grid[0]}×{grid[1]}",
    ]
    summary = folder / "training_summary.json"
    if summary.is_file():
        validation = json.loads(summary.read_text()).get("validation") or {}
        recorded = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in validation.items())
        if recorded:
            lines.append(f"recorded evaluation: {recorded}")
    return "\n".join(lines)


COMMANDS = {"generate": run_generate, "reconstruct": run_reconstruct, "tokenize": run_tokenize,
            "detokenize": run_detokenize, "info": run_info}  # fmt: skip


def quiet_libraries() -> None:
    """No loading bars or library warnings between the command and its one-line answer."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.debug:
        quiet_libraries()
    try:
        print(COMMANDS[args.command](args))
        return 0
    except Exception as error:  # one clear line unless --debug
        if args.debug:
            raise
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"vq-hub {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
