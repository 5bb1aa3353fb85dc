"""`vq-hub reconstruct`, `tokenize` and `detokenize`: images ↔ code grids with a saved tokenizer.

A single-level tokenizer's codes are one `.npy` array `(N, h, w)` (`(N, depth, h, w)` for a residual tokenizer); a
two-level (VQ-VAE-2) tokenizer's are a `.npz` archive with one array per level, `top` and `bottom`
(`vq_hub.code_levels` names them)."""

from pathlib import Path

from ._common import SHIPPED_IMAGES_NOTE, CommandError, load_images, load_tokenizer, positive_int, save_picture

IMAGES_HELP = "A folder of images, one image file or a Parquet file with an `image` column."
DEFAULT_IMAGES_HELP = IMAGES_HELP + f" Default: {SHIPPED_IMAGES_NOTE}."
MODEL_HELP = "A tokenizer folder or Hub repository id (or a pipeline's: its vqvae is used)."


def register(commands) -> None:
    reconstruct = commands.add_parser("reconstruct", help="Tokenize and decode images; print the PSNR.")
    reconstruct.add_argument("--model", required=True, help=MODEL_HELP)
    reconstruct.add_argument("--images", help=DEFAULT_IMAGES_HELP)
    reconstruct.add_argument(
        "--num-images",
        type=positive_int,
        default=8,
        help="How many images, drawn across classes when the file has labels.",
    )
    reconstruct.add_argument("--seed", type=int, default=0, help="Seed of the draw of images.")
    reconstruct.add_argument("--out", default="reconstructions.png", help="A grid: originals above reconstructions "
                             "(a two-level tokenizer adds a row of top-only decodes between them).")  # fmt: skip
    reconstruct.set_defaults(run=run_reconstruct)

    tokenize = commands.add_parser("tokenize", help="Images → a .npy file of code grids (N, h, w); a .npz with one "
                                   "array per level (top, bottom) for a two-level tokenizer.")  # fmt: skip
    tokenize.add_argument("--model", required=True, help=MODEL_HELP)
    tokenize.add_argument("--images", help=DEFAULT_IMAGES_HELP)
    tokenize.add_argument(
        "--num-images",
        type=positive_int,
        help="At most this many images, drawn across classes (default: all, in order).",
    )
    tokenize.add_argument("--seed", type=int, default=0, help="Seed of the draw of images.")
    tokenize.add_argument("--out", help="The file to write (exactly this path; default codes.npy, or codes.npz for a "
                          "two-level tokenizer).")  # fmt: skip
    tokenize.set_defaults(run=run_tokenize)

    detokenize = commands.add_parser("detokenize", help="A .npy (or, two-level, .npz) file of code grids → a grid "
                                     "picture.")  # fmt: skip
    detokenize.add_argument("--model", required=True, help=MODEL_HELP)
    detokenize.add_argument("--codes", required=True, help="A .npy file of integer codes (N, h, w) or (h, w), or the "
                            ".npz of a two-level tokenizer (arrays top and bottom).")  # fmt: skip
    detokenize.add_argument("--out", default="decoded.png", help="The picture to write, a square-ish grid.")
    detokenize.set_defaults(run=run_detokenize)


def run_reconstruct(args) -> str:
    import torch

    from ..code_levels import is_hierarchical

    from ..data import image_grid
    from ..metrics import psnr

    model = load_tokenizer(args.model)
    config = model.config
    images = load_images(images_of(args), config.sample_size, config.in_channels, args.num_images, args.seed)
    with torch.no_grad():
        codes = model.tokenize(images)
        reconstructions = model.detokenize(codes).clamp(-1, 1)
        rows = [images, model.detokenize_top(codes[0]).clamp(-1, 1)] if is_hierarchical(model) else [images]
    save_picture(image_grid([*rows, reconstructions]), args.out)
    return f"wrote {args.out}: {len(images)} images, PSNR {float(psnr(reconstructions, images)):.2f} dB"


def run_tokenize(args) -> str:
    import numpy as np

    from ..code_levels import codebook_sizes, is_hierarchical, level_names, tokenize_levels
    from ..utils.io import atomic_file

    model = load_tokenizer(args.model)
    config = model.config
    images = load_images(images_of(args), config.sample_size, config.in_channels, args.num_images, args.seed)
    dtype = np.int16 if max(codebook_sizes(model)) <= 32768 else np.int32
    arrays = {
        name: codes.numpy().astype(dtype) for name, codes in zip(level_names(model), tokenize_levels(model, images))
    }
    out = args.out or ("codes.npz" if is_hierarchical(model) else "codes.npy")
    with atomic_file(out) as temporary, open(temporary, "wb") as file:  # exactly at --out, whatever its suffix
        if is_hierarchical(model):
            np.savez(file, **arrays)
        else:
            np.save(file, arrays["codes"])
    described = [f"{name} codes of shape {array.shape}, values in [0, {size - 1}]"
                 for (name, array), size in zip(arrays.items(), codebook_sizes(model))]  # fmt: skip
    return f"wrote {out}: " + ("; ".join(described) if is_hierarchical(model) else described[0].split(" ", 1)[1])


def run_detokenize(args) -> str:
    import numpy as np
    import torch

    from ..code_levels import detokenize_levels
    from ..data import square_grid

    model = load_tokenizer(args.model)
    grids = [torch.from_numpy(codes.astype(np.int64)) for codes in read_code_arrays(args.codes, model)]
    try:
        with torch.no_grad():
            images = detokenize_levels(model, grids).clamp(-1, 1)
    except ValueError as error:  # e.g. a bottom grid that is not the top grid upsampled
        raise CommandError(f"--codes {args.codes}: {error}") from None
    save_picture(square_grid(images), args.out)
    return f"wrote {args.out}: {len(images)} images of {images.shape[-2]}×{images.shape[-1]}"


def images_of(args) -> str:
    """--images, or the images shipped with vq_hub."""
    from ._common import SHIPPED_IMAGES

    return args.images or SHIPPED_IMAGES


def read_code_arrays(path: str, model) -> list:
    """The code arrays of `path` for `model`, one per level (top first), each checked: integers `(N, h, w)` (or
    `(h, w)`; a residual tokenizer's `(N, depth, h, w)`) within the level's codebook. A `.npy` array for a single-level tokenizer, a `.npz` archive with one
    array per level for a two-level one."""
    import numpy as np

    from ..code_levels import code_depths, codebook_sizes, is_hierarchical, level_names

    if not Path(path).is_file():
        raise CommandError(f"--codes {path}: no such file")
    names, sizes = level_names(model), codebook_sizes(model)
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as error:
        raise CommandError(f"--codes {path}: not a .npy array or .npz archive of integers ({error})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            if not is_hierarchical(model) or sorted(loaded.files) != sorted(names):
                expected = f"arrays {list(names)}" if is_hierarchical(model) else "one .npy array"
                raise CommandError(
                    f"--codes {path}: holds arrays {loaded.files}; this tokenizer's codes are {expected}"
                )
            arrays = [loaded[name] for name in names]
    elif is_hierarchical(model):
        raise CommandError(f"--codes {path}: a two-level tokenizer needs a .npz archive with arrays {list(names)} "
                           "(as `vq-hub tokenize` writes it), got one array")  # fmt: skip
    else:
        arrays = [loaded]
    checked = []
    for name, array, size, depth in zip(names, arrays, sizes, code_depths(model)):
        label = "" if len(names) == 1 else f" ({name})"
        ndim, shape = (3, "(N, h, w)") if depth == 1 else (4, f"(N, {depth}, h, w)")  # residual codes: a depth axis
        array = array[None] if array.ndim == ndim - 1 else array
        if array.ndim != ndim or not np.issubdtype(array.dtype, np.integer) or array.size == 0 or \
                (depth > 1 and array.shape[1] != depth):  # fmt: skip
            raise CommandError(f"--codes {path}{label}: expected integer codes {shape}, got {array.dtype} "
                               f"{array.shape}")  # fmt: skip
        if array.min() < 0 or array.max() >= size:
            raise CommandError(f"--codes {path}{label}: values must lie in [0, {size - 1}] for this tokenizer, got "
                               f"[{array.min()}, {array.max()}]")  # fmt: skip
        checked.append(array)
    return checked
