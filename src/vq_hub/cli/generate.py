"""`vq-hub generate`: sample a grid of images (a row per class) from a saved pipeline."""

from ._common import CommandError, add_sampling_arguments, load_pipeline, positive_int, sampling_options, save_picture


def register(commands) -> None:
    parser = commands.add_parser("generate", help="Sample images with a saved pipeline (autoregressive or diffusion).",
                                 description=__doc__)  # fmt: skip
    parser.add_argument("--model", required=True, help="A saved pipeline: a folder or a Hub repository id.")
    parser.add_argument(
        "--class",
        dest="class_labels",
        type=int,
        nargs="+",
        help="Class label(s) for a class-conditional prior (default: one row per class).",
    )
    parser.add_argument(
        "--num-images", type=positive_int, default=8, help="Images per class (or in all, for an unconditional prior)."
    )
    add_sampling_arguments(parser)
    parser.add_argument("--out", default="samples.png", help="Where to write the grid (one row per class).")
    parser.add_argument("--gif", help="Also write the reverse process as an animated GIF (diffusion pipelines).")
    parser.set_defaults(run=run)


def run(args) -> str:
    import torch

    from ..data import save_gif
    from ..pipelines import VQDiscreteDiffusionPipeline
    from ..utils.io import atomic_file

    pipe = load_pipeline(args.model)
    options = sampling_options(args, pipe)
    if args.gif and not isinstance(pipe, VQDiscreteDiffusionPipeline):
        raise CommandError(f"--gif shows a diffusion pipeline's reverse process; {args.model} holds a "
                           f"{type(pipe).__name__}")  # fmt: skip
    num_classes = pipe.vocabulary.num_classes
    if args.class_labels and num_classes == 0:
        raise CommandError(f"--class: {args.model} holds an unconditional prior")
    for label in args.class_labels or []:
        if not 0 <= label < num_classes:
            raise CommandError(f"--class {label}: labels of this prior lie in [0, {num_classes - 1}]")
    generator = torch.Generator().manual_seed(args.seed)
    grid = pipe.sample_grid(args.num_images, class_labels=args.class_labels, generator=generator, **options)
    written = [save_picture(grid, args.out)]
    if args.gif:
        labels = args.class_labels or (list(range(num_classes)) if num_classes else None)
        generator = torch.Generator().manual_seed(args.seed)
        batch_size = len(labels) if labels else args.num_images
        output = pipe(batch_size=batch_size, class_labels=labels, generator=generator, return_intermediates=True,
                      **options)  # fmt: skip
        with atomic_file(args.gif) as temporary:
            save_gif(output.intermediates, temporary)
        written.append(args.gif)
    return "wrote " + " and ".join(str(path) for path in written)
