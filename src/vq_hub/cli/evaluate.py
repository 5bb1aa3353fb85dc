"""`vq-hub evaluate`: FID, KID, precision/recall and class accuracy of a pipeline's samples, or rFID, PSNR, SSIM and
codebook figures of a tokenizer's reconstructions, measured with the shipped feature network (offline).

Examples:
  vq-hub evaluate --model checkpoints/fashion-mnist-diffusion --num-images 1000
  vq-hub evaluate --model checkpoints/fashion-mnist-diffusion --num-steps 4 8 16 50 --guidance-scale 1 2 3 5
  vq-hub evaluate --model checkpoints/fashion-mnist-vqvae       (the 1,000 images shipped with vq_hub)
  vq-hub evaluate --model checkpoints/fashion-mnist-vqvae --images test.parquet
"""

import itertools
import json
import sys
from argparse import Namespace
from pathlib import Path

from ._common import (
    SHIPPED_IMAGES,
    SHIPPED_IMAGES_NOTE,
    CommandError,
    add_sampling_arguments,
    load_pipeline,
    load_tokenizer,
    model_folder,
    positive_int,
    read_images,
    sampling_options,
)  # fmt: skip

PIPELINE_COLUMNS = [("steps", "num_steps", "{}"), ("guidance", "guidance_scale", "{:g}"), ("temp", "temperature", "{:g}"),
                    ("top-k", "top_k", "{}"), ("seed", "seed", "{}"), ("FID", "fid", "{:.2f}"), ("KID×1e3", "kid", "k{:.2f}"),
                    ("precision", "precision", "{:.3f}"), ("recall", "recall", "{:.3f}"), ("class acc", "class_accuracy", "{:.3f}"),
                    ("score", "classifier_score", "{:.2f}"), ("s/image", "seconds_per_image", "{:.4f}")]  # fmt: skip
TEXT_COLUMNS = [("steps", "num_steps", "{}"), ("guidance", "guidance_scale", "{:g}"), ("temp", "temperature", "{:g}"),
                ("top-k", "top_k", "{}"), ("seed", "seed", "{}"), ("FID", "fid", "{:.2f}"),
                ("items", "items", "{:.3f}"), ("colours", "colours", "{:.3f}"), ("positions", "positions", "{:.3f}"),
                ("scenes", "scenes", "{:.3f}"), ("real scenes", "real_scenes", "{:.3f}"),
                ("s/image", "seconds_per_image", "{:.4f}")]  # fmt: skip
TOKENIZER_COLUMNS = [("rFID", "rfid", "{:.2f}"), ("KID×1e3", "kid", "k{:.2f}"), ("precision", "precision", "{:.3f}"),
                     ("recall", "recall", "{:.3f}"), ("class acc", "class_accuracy", "{:.3f}"), ("PSNR", "psnr", "{:.2f}"),
                     ("SSIM", "ssim", "{:.4f}"), ("usage", "codebook_usage", "{:.3f}"), ("perplexity", "perplexity", "{:.1f}"),
                     ("top usage", "top_codebook_usage", "{:.3f}"), ("top perplexity", "top_perplexity", "{:.1f}"),
                     ("bottom usage", "bottom_codebook_usage", "{:.3f}"),
                     ("bottom perplexity", "bottom_perplexity", "{:.1f}"), ("s/image", "seconds_per_image", "{:.4f}")]  # fmt: skip


def register(commands) -> None:
    parser = commands.add_parser("evaluate", help="FID/KID/precision/recall/class accuracy of samples, or rFID/PSNR/"
                                 "SSIM of reconstructions, with the shipped feature network.", description=__doc__)  # fmt: skip
    parser.add_argument("--model", required=True, help="A saved pipeline (samples are scored) or tokenizer "
                        "(reconstructions are scored): a folder or a Hub repository id.")  # fmt: skip
    parser.add_argument("--feature-network", help="A saved ImageClassifier folder (default: the shipped one for the "
                        "model's images, checkpoints/fashion-mnist-classifier or checkpoints/cifar10-classifier).")  # fmt: skip
    parser.add_argument("--images", help="A Parquet file (image, label) of real images: the reference for a pipeline "
                        "(default: the feature network's test-split statistics); for a tokenizer (default: "
                        f"{SHIPPED_IMAGES_NOTE}) and, required, for a text-to-image pipeline (a captioned split: "
                        "image, caption; its captions are the prompts).")  # fmt: skip
    parser.add_argument("--prompts", help="Text-to-image pipelines: a text file of prompts, one a line (default: the "
                        "captions of --images).")  # fmt: skip
    parser.add_argument("--num-images", type=positive_int, help="Samples per configuration in total for a pipeline, "
                        "every class in turn (default 1000); one per prompt for a text-to-image pipeline (default: "
                        "every prompt, at most 1000); for a tokenizer, images of --images (default: all).")  # fmt: skip
    parser.add_argument("--batch-size", type=positive_int, default=100, help="Images sampled or reconstructed at once.")
    add_sampling_arguments(parser, sweep=True)
    parser.add_argument("--nearest-k", type=positive_int, default=5, help="k of the precision/recall manifolds.")
    parser.add_argument("--inception-weights", help="torch-fidelity's Inception v3 weights file: also report the "
                        "standard FID (needs --images and torch-fidelity; never downloaded).")  # fmt: skip
    parser.add_argument("--out", default="evaluation.json", help="The JSON report to write.")
    parser.add_argument("--no-progress", action="store_true", help="No progress bar on stderr.")
    parser.set_defaults(run=run)


def run(args) -> str:
    from ..evaluation import load_feature_network

    if not args.out.endswith(".json"):
        raise CommandError(f"--out {args.out}: give a file name ending in .json")
    folder = model_folder(args.model)
    network = None
    if args.feature_network:
        try:
            network = load_feature_network(args.feature_network)
        except (FileNotFoundError, ValueError, OSError) as error:
            raise CommandError(f"--feature-network {args.feature_network}: {error}") from None
    try:
        if (folder / "model_index.json").is_file():
            report = evaluate_pipeline(args, folder, network)
            columns = TEXT_COLUMNS if report["kind"] == "text-to-image pipeline" else PIPELINE_COLUMNS
        else:
            report = evaluate_tokenizer(args, network)
            columns = TOKENIZER_COLUMNS
    except FileNotFoundError as error:
        raise CommandError(str(error)) from None
    write_report(report, args.out)  # (again, for a tokenizer: once)
    first = report["results"][0]
    network_name = first["feature_network"]["name"]
    heading = (f"{report['model']}: {len(report['results'])} configuration(s), figures from the feature network "
               f"{network_name!r} (our classifier, not Inception v3)")  # fmt: skip
    lines = [heading, table(report["results"], columns), f"wrote {args.out}"]
    if "fid_inception" in first and first["fid_inception"] is None:
        lines.insert(-1, f"standard Inception FID: {first['fid_inception_note']}")
    return "\n".join(lines)


def real_images(args, channels: int, size: int, limit: int | None = None):
    """`(images (N, C, H, W) in [-1, 1], labels or None)` of --images."""
    import torch

    from ..data import image_to_tensor

    if not Path(args.images).expanduser().exists():
        raise CommandError(f"--images {args.images}: no such file")
    if not Path(args.images).expanduser().is_file() or not args.images.endswith(".parquet"):
        raise CommandError(f"--images {args.images}: expected a Parquet file with an `image` column")
    images, labels = read_images(args.images, limit, 0)
    tensors = torch.stack([image_to_tensor(image, size, channels) for image in images])
    return tensors, torch.tensor(labels) if labels is not None else None


def evaluate_pipeline(args, folder: Path, network) -> dict:
    from ..evaluation import ReferenceStatistics, evaluate_pipeline, extract_features
    from ..evaluation.feature_network import resolve_feature_network
    from ..pipelines import VQDiscreteDiffusionPipeline
    from ..pipelines.discrete_diffusion import DEFAULT_NUM_STEPS

    pipe = load_pipeline(str(folder), args.device)
    if getattr(pipe, "tokenizer", None) is not None:
        return evaluate_text_pipeline(args, pipe, network)
    if args.prompts:
        raise CommandError(f"--prompts applies to text-to-image pipelines; {args.model} holds a {type(pipe).__name__}")
    channels, size = pipe.vqvae.config.in_channels, pipe.resolution
    network = resolve_feature_network(network, channels, size)  # before any sampling: a mismatch fails at once
    reference, images = None, None
    if args.images:
        images, labels = real_images(args, channels, size)
        features, _ = extract_features(network.classifier, images)
        reference = ReferenceStatistics.from_features(features, labels, split=Path(args.images).name,
                                                      source=str(args.images))  # fmt: skip
    results = []
    report = {"model": args.model, "kind": "pipeline", "results": results, **environment()}
    grid = itertools.product(args.num_steps or [None], args.guidance_scale, args.temperature, args.top_k or [None],
                             args.seed)  # fmt: skip
    for num_steps, guidance_scale, temperature, top_k, seed in grid:
        options = sampling_options(Namespace(model=args.model, num_steps=num_steps, guidance_scale=guidance_scale,
                                             temperature=temperature, top_k=top_k), pipe)  # fmt: skip
        if isinstance(pipe, VQDiscreteDiffusionPipeline) and options["num_steps"] is None:
            options["num_steps"] = min(DEFAULT_NUM_STEPS, pipe.scheduler.config.num_train_timesteps)
        print(f"evaluating {', '.join(f'{k}={v}' for k, v in options.items())}, seed={seed}", file=sys.stderr)
        results.append(evaluate_pipeline(
            pipe, network, num_images=args.num_images or 1000, batch_size=args.batch_size, seed=seed,
            reference=reference, real_images=images, inception_weights=args.inception_weights,
            progress=not args.no_progress, nearest_k=args.nearest_k, **options,
        ))  # fmt: skip
        write_report(report, args.out)  # after every configuration: a long sweep keeps what it has measured
    return report


def evaluate_text_pipeline(args, pipe, network) -> dict:
    """One image per prompt (the captions of --images, or --prompts), FID against the split's images with the slot
    feature network and, where the split records its scenes, the faithfulness figures."""
    from ..evaluation import load_feature_network
    from ..evaluation.feature_network import checkpoint_folders
    from ..evaluation.text_to_image import SHIPPED_SLOT_CLASSIFIER, evaluate_text_to_image, load_captioned_split

    if not args.images:
        raise CommandError(f"--images: {args.model} is a text-to-image pipeline, scored against real images: give a "
                           "captioned Parquet split (image, caption), e.g. test.parquet of "
                           "examples/make_captioned_scenes.py")  # fmt: skip
    if not Path(args.images).expanduser().is_file():
        raise CommandError(f"--images {args.images}: no such file")
    try:
        split = load_captioned_split(args.images)
    except ValueError as error:
        raise CommandError(f"--images {args.images}: {error}") from None
    prompts = split.captions
    if args.prompts:
        if not Path(args.prompts).expanduser().is_file():
            raise CommandError(f"--prompts {args.prompts}: no such file")
        prompts = [line.strip() for line in Path(args.prompts).expanduser().read_text().splitlines() if line.strip()]
        if not prompts:
            raise CommandError(f"--prompts {args.prompts}: the file holds no prompt")
    prompts = prompts[: args.num_images or 1000]
    if network is None:
        found = [folder / SHIPPED_SLOT_CLASSIFIER for folder in checkpoint_folders()
                 if (folder / SHIPPED_SLOT_CLASSIFIER / "config.json").is_file()]  # fmt: skip
        if not found:
            raise CommandError(f"--feature-network: give the slot classifier ({SHIPPED_SLOT_CLASSIFIER} is not in "
                               "./checkpoints)")  # fmt: skip
        network = load_feature_network(found[0])
    results = []
    report = {"model": args.model, "kind": "text-to-image pipeline", "results": results, **environment()}
    grid = itertools.product(args.num_steps or [None], args.guidance_scale, args.temperature, args.top_k or [None],
                             args.seed)  # fmt: skip
    for num_steps, guidance_scale, temperature, top_k, seed in grid:
        options = sampling_options(Namespace(model=args.model, num_steps=num_steps, guidance_scale=guidance_scale,
                                             temperature=temperature, top_k=top_k), pipe)  # fmt: skip
        print(f"evaluating {len(prompts)} prompts, {', '.join(f'{k}={v}' for k, v in options.items())}, seed={seed}",
              file=sys.stderr)  # fmt: skip
        try:
            result = evaluate_text_to_image(pipe, prompts, network.classifier, split.images, split,
                                            batch_size=args.batch_size, seed=seed, network_name=network.name,
                                            **options)  # fmt: skip
        except ValueError as error:
            raise CommandError(str(error)) from None
        results.append(result)
        write_report(report, args.out)
    return report


def evaluate_tokenizer(args, network) -> dict:
    from ..evaluation import evaluate_tokenizer

    if not args.images:  # reconstructions of real images: the shipped ones unless a split is given
        args.images = SHIPPED_IMAGES
        print(f"note: scoring reconstructions of {SHIPPED_IMAGES_NOTE} (give --images for a test split)",
              file=sys.stderr)  # fmt: skip
    for flag, value, default in [("--num-steps", args.num_steps, None), ("--top-k", args.top_k, None),
                                 ("--guidance-scale", args.guidance_scale, [2.0]),
                                 ("--temperature", args.temperature, [1.0]), ("--device", args.device, "auto")]:  # fmt: skip
        if value != default:
            raise CommandError(f"{flag} applies to pipelines (tokenizers are scored on the CPU); {args.model} holds a "
                               "tokenizer")  # fmt: skip
    tokenizer = load_tokenizer(args.model)
    images, labels = real_images(args, tokenizer.config.in_channels, tokenizer.config.sample_size, args.num_images)
    result = evaluate_tokenizer(tokenizer, images, network, labels, batch_size=args.batch_size, seed=args.seed[0],
                                inception_weights=args.inception_weights, progress=not args.no_progress,
                                nearest_k=args.nearest_k)  # fmt: skip
    result["images"] = str(args.images)
    return {"model": args.model, "kind": "tokenizer", "results": [result], **environment()}


def environment() -> dict:
    import platform

    import torch

    from .. import __version__

    return {"vq_hub": __version__, "torch": torch.__version__, "machine": platform.machine(),
            "command": "vq-hub " + " ".join(sys.argv[1:])}  # fmt: skip


def table(rows: list[dict], columns) -> str:
    """A Markdown table of `columns` (header, key, format; "k" before a format scales by 1,000)."""
    columns = [column for column in columns if any(row.get(column[1]) is not None for row in rows)]
    lines = ["| " + " | ".join(header for header, _, _ in columns) + " |", "|" + "---:|" * len(columns)]
    for row in rows:
        cells = []
        for _, key, style in columns:
            value = row.get(key)
            if value is None:
                cells.append("–")
            elif style.startswith("k"):
                cells.append(style[1:].format(value * 1000))
            else:
                cells.append(style.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(report: dict, out: str) -> None:
    from ..utils.io import atomic_file

    with atomic_file(out) as temporary:
        temporary.write_text(json.dumps(report, indent=2) + "\n")
