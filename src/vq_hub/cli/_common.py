"""What the subcommands share: argument types with clear errors, loading models (folders or Hub ids) and images, and
writing outputs atomically."""

import argparse
import math
import sys
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# The 1,000 Fashion-MNIST images (MIT) that ship inside the package (as `vq_hub.data.shipped_fashion_mnist`, without
# importing torch): the default where a command only needs some images.
SHIPPED_IMAGES = str(Path(__file__).resolve().parents[1] / "assets" / "fashion_mnist_mini" / "train.parquet")
SHIPPED_IMAGES_NOTE = "the 1,000 Fashion-MNIST images shipped with vq_hub"


class CommandError(Exception):
    """An error the user can fix; printed as one line."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every flag's help shows its default; descriptions keep their line breaks (examples)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`vq-hub generate: error: …`) like every other error, exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


# ------------------------------------------------------------------------------------------------- argument types


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number ≥ 0, got {value}")
    return value


def add_sampling_arguments(parser: argparse.ArgumentParser, sweep: bool = False) -> None:
    """The sampling flags of `generate` (and of every command that samples from a pipeline). With `sweep=True` each
    flag takes one or more values (lists, a run per combination)."""
    several = {"nargs": "+"} if sweep else {}
    also = " Several values: one run each." if sweep else ""

    def default(value):
        return [value] if sweep and value is not None else value

    parser.add_argument("--num-steps", type=positive_int, **several, help="Denoising steps (diffusion pipelines only; "
                        "default: the pipeline's own, 50 or fewer)." + also)  # fmt: skip
    parser.add_argument(
        "--guidance-scale",
        type=finite_float,
        default=default(2.0),
        **several,
        help="Classifier-free guidance scale: 1 disables guidance, larger follows the class more." + also,
    )
    parser.add_argument(
        "--temperature",
        type=non_negative_float,
        default=default(1.0),
        **several,
        help="Sampling temperature: 0 is greedy (argmax), above 1 more diverse." + also,
    )
    parser.add_argument("--top-k", type=positive_int, **several,
                        help="Keep only the k most likely codes (autoregressive only)." + also)  # fmt: skip
    parser.add_argument("--seed", type=int, default=default(0), **several,
                        help="Seed of the random generator: same seed, same images." + also)  # fmt: skip
    parser.add_argument("--device", default="auto",
                        help="Where to sample: cpu, cuda, cuda:N, or auto (a CUDA GPU when there is one). On CUDA an "
                        "autoregressive pipeline records its decoding step as a CUDA graph (`pipe.cuda_graphs`).")


def sampling_options(args: argparse.Namespace, pipe) -> dict:
    """The pipeline-call keyword arguments of the sampling flags, checked against the pipeline type."""
    from ..pipelines import VQDiscreteDiffusionPipeline

    is_diffusion = isinstance(pipe, VQDiscreteDiffusionPipeline)
    # A VQ-VAE-2 pipeline samples its top autoregressively; its bottom prior may be a denoiser (then it takes steps).
    takes_steps, takes_top_k = is_diffusion or getattr(pipe, "bottom_is_denoiser", False), not is_diffusion
    if args.num_steps is not None and not takes_steps:
        raise CommandError(f"--num-steps applies to diffusion pipelines; {args.model} holds a {type(pipe).__name__}")
    if args.top_k is not None and not takes_top_k:
        raise CommandError(f"--top-k applies to autoregressive pipelines; {args.model} holds a {type(pipe).__name__}")
    options = {"guidance_scale": args.guidance_scale, "temperature": args.temperature}
    if takes_steps:
        options["num_steps"] = args.num_steps
    if takes_top_k and args.top_k is not None:
        options["top_k"] = args.top_k
    return options


# ------------------------------------------------------------------------------------------------- models


def model_folder(name_or_path: str) -> Path:
    """A local folder, or a Hub repository id fetched (or found in the cache) as a folder."""
    from ..hub import resolve_folder

    try:
        return resolve_folder(name_or_path, argument="--model")
    except (FileNotFoundError, NotADirectoryError) as error:
        raise CommandError(str(error)) from None


def load_pipeline(name_or_path: str, device: str | None = None):
    """A saved pipeline, on `device` ("auto": CUDA when available) when given, else where it loads (the CPU)."""
    from ..pipelines import VQPipeline

    pipe = VQPipeline.from_pretrained(model_folder(name_or_path))
    pipe.set_progress_bar_config(disable=True)
    return pipe if device is None else place_pipeline(pipe, device)


# Autoregressive grids of at least this many codes are sampled with the CUDA-graph step on a GPU: recording it costs
# about one eager step, and on an H200 it paid back from the smallest shipped grid (64 codes: 13% faster at batch
# 1,000; 256 codes: 4.9× at batch 8; docs/gpu.md).
CUDA_GRAPH_MIN_CODES = 16


def place_pipeline(pipe, device: str):
    """Move `pipe` to `device` ("auto", "cpu", "cuda", "cuda:1", …); on CUDA, an autoregressive pipeline samples with
    its decoding step recorded as a CUDA graph (same codes as the eager sampler, fewer launches)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        target = torch.device(device)
    except RuntimeError:
        raise CommandError(f"--device {device}: expected cpu, cuda, cuda:N or auto") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise CommandError(f"--device {device}: this machine has no CUDA device (use --device cpu)")
    pipe.to(target)
    if target.type == "cuda" and hasattr(pipe, "cuda_graphs"):
        height, width = pipe.code_grid_size
        graphable = getattr(pipe, "supports_cuda_graphs", True)  # a factorised prior draws inside the step
        pipe.cuda_graphs = graphable and getattr(pipe, "num_codes", height * width) >= CUDA_GRAPH_MIN_CODES  # h·w·depth
    return pipe


def load_tokenizer(name_or_path: str):
    """A tokenizer (`VQVAEModel` or `HierarchicalVQModel`) from a tokenizer folder, or the `vqvae` of a pipeline folder
    (local or on the Hub)."""
    from ..models.tokenizer_utils import load_tokenizer as load_any_tokenizer

    folder = model_folder(name_or_path)
    subfolder = "vqvae" if (folder / "model_index.json").is_file() else None
    if not (folder / (subfolder or "") / "config.json").is_file():
        raise CommandError(f"--model {name_or_path}: neither a tokenizer folder (config.json) nor a pipeline folder "
                           "(model_index.json)")  # fmt: skip
    return load_any_tokenizer(folder, subfolder=subfolder).eval()


# ------------------------------------------------------------------------------------------------- images


def pick_indices(count: int, limit: int | None, labels: list[int] | None, seed: int) -> list[int]:
    """Which of `count` images to use: all of them in order without `limit`; else `limit` of them drawn with `seed`,
    taking the classes in turn when there are labels (a file sorted by class still shows every class)."""
    import numpy as np

    if limit is None or limit >= count:
        return list(range(count))
    rng = np.random.default_rng(seed)
    if labels is None:
        return sorted(rng.choice(count, size=limit, replace=False).tolist())
    by_class = {}
    for index in rng.permutation(count).tolist():
        by_class.setdefault(labels[index], []).append(index)
    queues = [by_class[label] for label in sorted(by_class)]
    chosen = []
    while len(chosen) < limit:
        for queue in queues:
            if queue and len(chosen) < limit:
                chosen.append(queue.pop(0))
    return chosen


def read_images(source: str, limit: int | None, seed: int, argument: str = "--images"):
    """`(PIL images, labels or None)` from a Parquet file with an `image` column (read with pyarrow: no datasets cache,
    no progress output), a folder of image files or one image file; errors name `argument` (the flag, or the
    positional argument's name)."""
    import io

    from PIL import Image

    path = Path(source).expanduser()
    if not path.exists():
        raise CommandError(f"{argument} {source}: no such file or folder")
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        try:
            return [Image.open(path)], None
        except OSError as error:
            raise CommandError(f"{argument} {source}: not a readable image ({error})") from None
    if path.is_file() and path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if "image" not in table.column_names:
            raise CommandError(f"{argument} {source}: the Parquet file has no `image` column ({table.column_names})")
        labels = table.column("label").to_pylist() if "label" in table.column_names else None
        indices = pick_indices(table.num_rows, limit, labels, seed)
        cells = table.column("image").take(indices).to_pylist()
        images = [
            Image.open(io.BytesIO(cell["bytes"]) if isinstance(cell, dict) else io.BytesIO(cell)) for cell in cells
        ]
        return images, [labels[i] for i in indices] if labels is not None else None
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise CommandError(f"{argument} {source}: no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder")
        return [Image.open(files[i]) for i in pick_indices(len(files), limit, None, seed)], None
    raise CommandError(f"{argument} {source}: expected a folder of images, an image file "
                       f"({', '.join(IMAGE_SUFFIXES)}) or a .parquet file")  # fmt: skip


def load_images(source: str, resolution, channels: int, limit: int | None = None, seed: int = 0,
                with_labels: bool = False, argument: str = "--images"):  # fmt: skip
    """`(N, C, H, W)` images in [-1, 1] for a tokenizer with `channels` channels (and, with `with_labels`, their
    labels or `None`); colour conversions are said on stderr, not done silently."""
    import torch

    from ..data import image_to_tensor

    images, labels = read_images(source, limit, seed, argument)
    grayscale = sum(image.mode in ("1", "L", "LA", "I", "I;16", "F") for image in images)
    converted = len(images) - grayscale if channels == 1 else grayscale
    if converted:
        kind, target = ("colour", "grayscale") if channels == 1 else ("grayscale", "RGB")
        print(f"note: converted {converted} {kind} image(s) from {argument} to {target} for this {channels}-channel "
              "tokenizer", file=sys.stderr)  # fmt: skip
    tensors = torch.stack([image_to_tensor(image, resolution, channels) for image in images])
    return (tensors, labels) if with_labels else tensors


# ------------------------------------------------------------------------------------------------- outputs


def check_picture_path(out: str) -> None:
    """Refuse an `--out` that is not an image file name before any work is done."""
    if Path(out).suffix.lower() not in IMAGE_SUFFIXES + (".gif",):
        raise CommandError(f"--out {out}: give an image file name ending in one of {', '.join(IMAGE_SUFFIXES)}")


def save_picture(image, out: str) -> Path:
    """Write a PIL image (format from the suffix) through a temporary file: never half-written."""
    from ..utils.io import atomic_file

    check_picture_path(out)
    with atomic_file(out) as temporary:
        image.save(temporary)
    return Path(out)
