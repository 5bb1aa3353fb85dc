"""`vq-hub compress` and `vq-hub decompress`: images ↔ a `.vqz` file, range-coded with an autoregressive prior.

Examples:
  vq-hub compress test.parquet --model checkpoints/fashion-mnist-autoregressive --out test.vqz
  vq-hub decompress test.vqz --model checkpoints/fashion-mnist-autoregressive --out decoded/
"""

import time
from pathlib import Path

from ._common import IMAGE_SUFFIXES, CommandError, load_images, load_pipeline, positive_int, save_picture

MODEL_HELP = "The autoregressive pipeline (folder or Hub id) whose prior codes the grids; decompress needs the same."


def register(commands) -> None:
    compress = commands.add_parser("compress", help="Images → a .vqz file (tokenizer codes, range-coded by the prior).",
                                   description=__doc__)  # fmt: skip
    compress.add_argument("images", metavar="IMAGES", help="A folder of images or a Parquet file with an `image` "
                          "column (and `label`, coded as side information for a class-conditional prior).")  # fmt: skip
    compress.add_argument("--model", required=True, help=MODEL_HELP)
    compress.add_argument("--out", required=True, help="The .vqz file to write.")
    compress.add_argument("--num-images", type=positive_int, help="At most this many images, drawn across classes "
                          "(default: all, in order).")  # fmt: skip
    compress.add_argument("--seed", type=int, default=0, help="Seed of the draw of images (with --num-images).")
    compress.add_argument("--batch-size", type=positive_int, default=256, help="Images per prior batch; recorded in "
                          "the file, since the decoder must run the same batches.")  # fmt: skip
    compress.add_argument("--no-labels", action="store_true", help="Code every image unconditionally, ignoring "
                          "the Parquet file's labels.")  # fmt: skip
    compress.set_defaults(run=run_compress)

    decompress = commands.add_parser("decompress", help="A .vqz file → images (a folder of PNGs or a grid) or codes.",
                                     description=__doc__)  # fmt: skip
    decompress.add_argument("file", metavar="FILE", help="The .vqz file.")
    decompress.add_argument("--model", required=True, help=MODEL_HELP)
    decompress.add_argument("--out", required=True, help="A folder (one PNG per image, and labels.json when the file "
                            f"has labels), a grid picture ({', '.join(IMAGE_SUFFIXES)}) or a .npy file of codes "
                            "(N, h, w).")  # fmt: skip
    decompress.set_defaults(run=run_decompress)


def _autoregressive_pipeline(name: str):
    from ..pipelines import VQAutoregressivePipeline

    pipe = load_pipeline(name)
    if not isinstance(pipe, VQAutoregressivePipeline):
        raise CommandError(f"--model {name} holds a {type(pipe).__name__}; the codec needs an autoregressive "
                           "pipeline (its prior's next-code probabilities)")  # fmt: skip
    return pipe


def run_compress(args) -> str:
    import torch

    from ..codec import compress_codes, save_vqz

    if Path(args.out).suffix != ".vqz":
        raise CommandError(f"--out {args.out}: give a file name ending in .vqz")
    pipe = _autoregressive_pipeline(args.model)
    height, width = pipe.resolution
    channels = pipe.vqvae.config.in_channels
    images, labels = load_images(args.images, (height, width), channels, args.num_images, args.seed,
                                 with_labels=True, argument="IMAGES")  # fmt: skip
    num_classes = pipe.vocabulary.num_classes
    if args.no_labels or num_classes == 0:
        labels = None
    elif labels is not None and any(not -1 <= label < num_classes for label in labels):
        raise CommandError(f"{args.images}: labels must lie in [-1, {num_classes - 1}] for this prior (or pass "
                           "--no-labels)")  # fmt: skip
    start = time.perf_counter()
    with torch.no_grad():
        codes = torch.cat([pipe.encode_images(images[i : i + 256]).cpu() for i in range(0, len(images), 256)])
    data = compress_codes(pipe, codes, labels, batch_size=args.batch_size, progress=True)
    seconds = time.perf_counter() - start
    save_vqz(data, args.out)
    bits = 8 * len(data) / len(images)
    coded = "with their labels" if labels is not None else "unconditionally"
    return (f"wrote {args.out}: {len(images)} images coded {coded}, {len(data):,} bytes = {bits:.1f} bits per image, "
            f"{bits / (height * width):.4f} bits per pixel ({len(images) / seconds:.1f} images/s)")  # fmt: skip


def run_decompress(args) -> str:
    import json

    import numpy as np

    from ..codec import decompress_codes, read_header
    from ..data import square_grid, tensor_to_images
    from ..utils.io import atomic_directory, atomic_file

    if not Path(args.file).is_file():
        raise CommandError(f"{args.file}: no such file")
    out = Path(args.out)
    suffix = out.suffix.lower()
    if out.exists() and not out.is_dir() and suffix not in IMAGE_SUFFIXES + (".npy",):
        raise CommandError(f"--out {args.out}: exists and is not a folder, a picture or a .npy file")
    data = Path(args.file).read_bytes()
    read_header(data)  # a foreign, truncated or damaged file fails here, before the model loads
    pipe = _autoregressive_pipeline(args.model)
    start = time.perf_counter()
    output = decompress_codes(pipe, data, progress=True)
    seconds = time.perf_counter() - start
    codes, count = output.codes, len(output.codes)
    rate = f"{count / seconds:.1f} images/s, codes verified against their checksum"
    if suffix == ".npy":
        with atomic_file(out) as temporary, open(temporary, "wb") as file:
            np.save(file, codes.numpy().astype(np.int16 if pipe.vocabulary.codebook_size <= 32768 else np.int32))
        return f"wrote {args.out}: codes of shape {tuple(codes.shape)} ({rate})"
    images = _decoded_images(pipe, codes)
    if suffix in IMAGE_SUFFIXES:
        save_picture(square_grid(images), args.out)
        return f"wrote {args.out}: a grid of {count} images ({rate})"
    digits = max(5, len(str(count - 1)))
    with atomic_directory(out) as staging:
        for index, image in enumerate(tensor_to_images(images)):
            image.save(staging / f"{index:0{digits}d}.png")
        if output.class_labels is not None:
            (staging / "labels.json").write_text(json.dumps(output.class_labels.tolist()))
    return f"wrote {args.out}: {count} PNG images ({rate})"


def _decoded_images(pipe, codes):
    """The tokenizer's images `(N, C, H, W)` in [-1, 1] for `codes`, decoded 256 at a time."""
    import torch

    with torch.no_grad():
        return torch.cat([pipe.vqvae.detokenize(codes[i : i + 256]).float().clamp(-1, 1)
                          for i in range(0, len(codes), 256)])  # fmt: skip
