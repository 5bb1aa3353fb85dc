"""`vq-hub reconstruct`, `tokenize` and `detokenize`: images ↔ code grids with a saved tokenizer."""

from pathlib import Path

from ._common import CommandError, load_images, load_tokenizer, positive_int, save_picture

IMAGES_HELP = "A folder of images or a Parquet file with an `image` column."
MODEL_HELP = "A tokenizer folder or Hub repository id (or a pipeline's: its vqvae is used)."


def register(commands) -> None:
    reconstruct = commands.add_parser("reconstruct", help="Tokenize and decode images; print the PSNR.")
    reconstruct.add_argument("--model", required=True, help=MODEL_HELP)
    reconstruct.add_argument("--images", required=True, help=IMAGES_HELP)
    reconstruct.add_argument(
        "--num-images",
        type=positive_int,
        default=8,
        help="How many images, drawn across classes when the file has labels.",
    )
    reconstruct.add_argument("--seed", type=int, default=0, help="Seed of the draw of images.")
    reconstruct.add_argument("--out", default="reconstructions.png", help="A grid: originals above reconstructions.")
    reconstruct.set_defaults(run=run_reconstruct)

    tokenize = commands.add_parser("tokenize", help="Images → a .npy file of code grids (N, h, w).")
    tokenize.add_argument("--model", required=True, help=MODEL_HELP)
    tokenize.add_argument("--images", required=True, help=IMAGES_HELP)
    tokenize.add_argument(
        "--num-images",
        type=positive_int,
        help="At most this many images, drawn across classes (default: all, in order).",
    )
    tokenize.add_argument("--seed", type=int, default=0, help="Seed of the draw of images.")
    tokenize.add_argument("--out", default="codes.npy", help="The .npy file to write (exactly this path).")
    tokenize.set_defaults(run=run_tokenize)

    detokenize = commands.add_parser("detokenize", help="A .npy file of code grids → a grid picture.")
    detokenize.add_argument("--model", required=True, help=MODEL_HELP)
    detokenize.add_argument("--codes", required=True, help="A .npy file of integer codes (N, h, w) or (h, w).")
    detokenize.add_argument("--out", default="decoded.png", help="The picture to write, a square-ish grid.")
    detokenize.set_defaults(run=run_detokenize)


def run_reconstruct(args) -> str:
    import torch

    from ..data import image_grid
    from ..metrics import psnr

    model = load_tokenizer(args.model)
    images = load_images(args.images, model.config.sample_size, model.config.in_channels, args.num_images, args.seed)
    with torch.no_grad():
        reconstructions = model.detokenize(model.tokenize(images)).clamp(-1, 1)
    save_picture(image_grid([images, reconstructions]), args.out)
    return f"wrote {args.out}: {len(images)} images, PSNR {float(psnr(reconstructions, images)):.2f} dB"


def run_tokenize(args) -> str:
    import numpy as np

    from ..utils.io import atomic_file

    model = load_tokenizer(args.model)
    images = load_images(args.images, model.config.sample_size, model.config.in_channels, args.num_images, args.seed)
    codes = model.tokenize(images).numpy()
    with atomic_file(args.out) as temporary, open(temporary, "wb") as file:
        np.save(file, codes.astype(np.int16 if model.codebook_size <= 32768 else np.int32))  # exactly at --out
    return f"wrote {args.out}: codes of shape {codes.shape}, values in [0, {model.codebook_size - 1}]"


def run_detokenize(args) -> str:
    import numpy as np
    import torch

    from ..data import square_grid

    model = load_tokenizer(args.model)
    if not Path(args.codes).is_file():
        raise CommandError(f"--codes {args.codes}: no such file")
    try:
        codes = np.load(args.codes, allow_pickle=False)
    except ValueError as error:
        raise CommandError(f"--codes {args.codes}: not a .npy array of integers ({error})") from None
    if codes.ndim == 2:
        codes = codes[None]
    if codes.ndim != 3 or not np.issubdtype(codes.dtype, np.integer) or codes.size == 0:
        raise CommandError(f"--codes {args.codes}: expected integer codes (N, h, w), got {codes.dtype} {codes.shape}")
    if codes.min() < 0 or codes.max() >= model.codebook_size:
        raise CommandError(f"--codes {args.codes}: values must lie in [0, {model.codebook_size - 1}] for this "
                           f"tokenizer, got [{codes.min()}, {codes.max()}]")  # fmt: skip
    with torch.no_grad():
        images = model.detokenize(torch.from_numpy(codes.astype(np.int64))).clamp(-1, 1)
    save_picture(square_grid(images), args.out)
    return f"wrote {args.out}: {len(images)} images of {images.shape[-2]}×{images.shape[-1]}"
