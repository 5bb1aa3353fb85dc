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
        nargs="+",
        help="Class(es) of a class-conditional prior, by number or by the name its config records (e.g. Sneaker; "
        "`vq-hub info` lists them); default: one row per class.",
    )
    parser.add_argument("--prompt", nargs="+", help="Prompt(s) for a text-to-image pipeline, a row each (quote "
                        "each one: --prompt \"a red sneaker to the left of a blue bag\").")  # fmt: skip
    parser.add_argument("--negative-prompt", help="Guide away from this prompt (text-to-image pipelines, with "
                        "guidance).")  # fmt: skip
    parser.add_argument(
        "--num-images", type=positive_int, default=8,
        help="Images per row: per class (class-conditional), per prompt (text-to-image), or in all (unconditional).",
    )  # fmt: skip
    add_sampling_arguments(parser)
    parser.add_argument("--out", default="samples.png", help="Where to write the grid (one row per class or prompt).")
    parser.add_argument("--no-labels", action="store_true", help="No row labels (class names or prompts) on the grid.")
    parser.add_argument("--gif", help="Also write the reverse process as an animated GIF (diffusion pipelines).")
    parser.set_defaults(run=run)


def run(args) -> str:
    import torch

    from ..data import label_rows, save_gif
    from ..pipelines import VQDiscreteDiffusionPipeline
    from ..utils.io import atomic_file

    check_picture_path(args.out)  # before sampling: a wrong name should not cost a run
    pipe = load_pipeline(args.model, args.device)
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
    args.class_labels = class_numbers(args.class_labels, pipe) if args.class_labels else None
    generator = torch.Generator(pipe.device).manual_seed(args.seed)
    grid = pipe.sample_grid(args.num_images, class_labels=args.class_labels, generator=generator, **options)
    labels = args.class_labels or list(range(num_classes))
    names = pipe.class_names or [f"class {label}" for label in range(num_classes)]
    rows = [names[label] for label in labels] if num_classes else ["unconditional"]
    if num_classes and not args.no_labels:
        grid = label_rows(grid, rows, pipe.resolution[0])
    written = [save_picture(grid, args.out)]
    if args.gif:
        labels = args.class_labels or (list(range(num_classes)) if num_classes else None)
        generator = torch.Generator(pipe.device).manual_seed(args.seed)
        batch_size = len(labels) if labels else args.num_images
        output = pipe(batch_size=batch_size, class_labels=labels, generator=generator, return_intermediates=True,
                      **options)  # fmt: skip
        with atomic_file(args.gif) as temporary:
            save_gif(output.intermediates, temporary)
        written.append(args.gif)
    per_row = "per class" if num_classes else "in all (unconditional prior)"
    return (f"wrote {' and '.join(str(path) for path in written)}: {len(rows)} row(s) ({', '.join(rows)}), "
            f"{args.num_images} images {per_row}")  # fmt: skip


def class_numbers(values: list[str], pipe) -> list[int]:
    """`--class` values as labels: numbers, or the names the prior's config records (any case; a name's parts
    around "/" and a trailing "s" are enough: "t-shirt", "trousers", "sneaker")."""
    num_classes, names = pipe.vocabulary.num_classes, pipe.class_names or []

    def key(text: str) -> str:
        return text.strip().lower().removesuffix("s")

    labels = []
    for value in values:
        if value.lstrip("-").isdigit():
            label = int(value)
            if not 0 <= label < num_classes:
                raise CommandError(f"--class {value}: labels of this prior lie in [0, {num_classes - 1}]")
            labels.append(label)
            continue
        matches = [i for i, name in enumerate(names) if key(value) in (key(name), *map(key, name.split("/")))]
        if len(matches) != 1:
            known = ", ".join(f"{i} {name}" for i, name in enumerate(names)) if names else \
                f"it records no class names: give numbers 0–{num_classes - 1}"  # fmt: skip
            raise CommandError(f"--class {value}: not a class of this prior ({known})")
        labels.append(matches[0])
    return labels


def run_text(args, pipe, options: dict) -> str:
    """A row of `--num-images` samples per prompt of a text-to-image pipeline (and its reverse process with --gif)."""
    import torch

    from ..data import label_rows, save_gif
    from ..utils.io import atomic_file

    if args.class_labels:
        raise CommandError(f"--class: {args.model} holds a {type(pipe).__name__}, which takes --prompt, not classes")
    if not args.prompt:
        raise CommandError(f"--prompt is needed: {args.model} holds a text-to-image pipeline "
                           f"({type(pipe).__name__}); prompts of up to {pipe.max_text_length} tokens")  # fmt: skip
    if args.negative_prompt is not None:
        options["negative_prompt"] = args.negative_prompt
    generator = torch.Generator(pipe.device).manual_seed(args.seed)
    try:
        grid = pipe.sample_grid(args.num_images, prompts=args.prompt, generator=generator, **options)
    except ValueError as error:  # a prompt longer than the text length, …
        raise CommandError(str(error).replace("`prompt`", "--prompt")) from None
    if not args.no_labels:
        grid = label_rows(grid, args.prompt, pipe.resolution[0])
    written = [save_picture(grid, args.out)]
    if args.gif:
        generator = torch.Generator(pipe.device).manual_seed(args.seed)
        output = pipe(prompt=args.prompt, generator=generator, return_intermediates=True, **options)
        with atomic_file(args.gif) as temporary:
            save_gif(output.intermediates, temporary)
        written.append(args.gif)
    return (f"wrote {' and '.join(str(path) for path in written)}: {len(args.prompt)} row(s), one per prompt, "
            f"{args.num_images} images per prompt")  # fmt: skip
