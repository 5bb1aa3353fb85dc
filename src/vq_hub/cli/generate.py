"""`vq-hub generate`: sample a grid of images (a row per class, or per prompt) from a saved pipeline."""

from ._common import (
    CommandError,
    add_sampling_arguments,
    check_picture_path,
    load_pipeline,
    positive_int,
    sampling_options,
    save_picture,
)


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
    parser.add_argument("--prompt", nargs="+", help="Prompt(s) for a text-to-image pipeline, a row each (quote "
                        "each one: --prompt \"a red sneaker to the left of a blue bag\").")  # fmt: skip
    parser.add_argument("--negative-prompt", help="Guide away from this prompt (text-to-image pipelines, with "
                        "guidance).")  # fmt: skip
    parser.add_argument(
        "--num-images", type=positive_int, default=8,
        help="Images per class or prompt (or in all, for an unconditional prior).",
    )  # fmt: skip
    add_sampling_arguments(parser)
    parser.add_argument("--out", default="samples.png", help="Where to write the grid (one row per class or prompt).")
    parser.add_argument("--gif", help="Also write the reverse process as an animated GIF (diffusion pipelines).")
    parser.set_defaults(run=run)


def run(args) -> str:
    import torch

    from ..data import save_gif
    from ..pipelines import VQDiscreteDiffusionPipeline
    from ..utils.io import atomic_file

    check_picture_path(args.out)  # before sampling: a wrong name should not cost a run
    pipe = load_pipeline(args.model)
    options = sampling_options(args, pipe)
    if args.gif and not isinstance(pipe, VQDiscreteDiffusionPipeline):
        raise CommandError(f"--gif shows a diffusion pipeline's reverse process; {args.model} holds a "
                           f"{type(pipe).__name__}")  # fmt: skip
    if hasattr(pipe, "tokenizer"):
        return run_text(args, pipe, options)
    if args.prompt or args.negative_prompt:
        raise CommandError(f"--prompt: {args.model} holds a {type(pipe).__name__}, which takes no text (a "
                           "text-to-image pipeline does)")  # fmt: skip
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


def run_text(args, pipe, options: dict) -> str:
    """A row of `--num-images` samples per prompt of a text-to-image pipeline (and its reverse process with --gif)."""
    import torch

    from ..data import save_gif
    from ..utils.io import atomic_file

    if args.class_labels:
        raise CommandError(f"--class: {args.model} holds a {type(pipe).__name__}, which takes --prompt, not classes")
    if not args.prompt:
        raise CommandError(f"--prompt is needed: {args.model} holds a text-to-image pipeline "
                           f"({type(pipe).__name__}); prompts of up to {pipe.max_text_length} tokens")  # fmt: skip
    if args.negative_prompt is not None:
        options["negative_prompt"] = args.negative_prompt
    generator = torch.Generator().manual_seed(args.seed)
    try:
        grid = pipe.sample_grid(args.num_images, prompts=args.prompt, generator=generator, **options)
    except ValueError as error:  # a prompt longer than the text length, …
        raise CommandError(str(error).replace("`prompt`", "--prompt")) from None
    written = [save_picture(grid, args.out)]
    if args.gif:
        generator = torch.Generator().manual_seed(args.seed)
        output = pipe(prompt=args.prompt, generator=generator, return_intermediates=True, **options)
        with atomic_file(args.gif) as temporary:
            save_gif(output.intermediates, temporary)
        written.append(args.gif)
    return "wrote " + " and ".join(str(path) for path in written)
