"""Convert a LlamaGen VQ tokenizer checkpoint (e.g. vq_ds16_c2i.pt) into a vq_hub `VQVAEModel` folder.

    python conversion/convert_llamagen_vq.py --ckpt vq_ds16_c2i.pt --dst llamagen-vq-ds16-c2i
"""

import argparse
import shlex
import sys

from vq_hub.conversion_llamagen_vq import LLAMAGEN_WEIGHT_KEYS, convert_llamagen_vq, save_converted_llamagen_vq


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", required=True, help="LlamaGen's .pt checkpoint (or its VQModelHF .safetensors).")
    parser.add_argument("--dst", required=True, help="Output folder (loads with vq_hub.VQVAEModel.from_pretrained).")
    parser.add_argument(
        "--weights",
        choices=LLAMAGEN_WEIGHT_KEYS,
        help="The checkpoint entry to convert (default: LlamaGen's order, ema, then model, then state_dict).",
    )
    parser.add_argument(
        "--no_codebook_l2_norm",
        action="store_true",
        help="The tokenizer was trained with codebook_l2_norm=False (every released one uses True).",
    )
    parser.add_argument("--image_size", type=int, default=256, help="Training resolution, recorded in the config.")
    parser.add_argument(
        "--allow_pickle",
        action="store_true",
        help="Load with weights_only=False: runs code pickled in the file. Only for files you trust.",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    model = convert_llamagen_vq(args.ckpt, weights=args.weights, codebook_l2_norm=not args.no_codebook_l2_norm,
                                sample_size=args.image_size, allow_pickle=args.allow_pickle)  # fmt: skip
    words = sys.argv[1:] if argv is None else argv
    command = "python conversion/convert_llamagen_vq.py " + shlex.join(words)
    save_converted_llamagen_vq(model, args.dst, str(args.ckpt), command)
    print(f"wrote {args.dst}: {model.codebook_size} codes of {model.config.vq_embed_dim} dimensions, "
          f"downsampling ×{model.downsample_factor}")  # fmt: skip


if __name__ == "__main__":
    main()
