"""Convert an Open-MAGVIT2 tokenizer checkpoint (e.g. imagenet_256_L.ckpt) into a vq_hub `MagvitV2Tokenizer` folder.

    python conversion/convert_open_magvit2.py --ckpt imagenet_256_L.ckpt --dst open-magvit2-256-L
"""

import argparse
import shlex
import sys

from vq_hub.conversion_open_magvit2 import OPEN_MAGVIT2_WEIGHTS, convert_open_magvit2, save_converted_open_magvit2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", required=True, help="SEED-Voken's Lightning checkpoint (.ckpt).")
    parser.add_argument("--dst", required=True, help="Output folder (loads with vq_hub.MagvitV2Tokenizer.from_pretrained).")
    parser.add_argument("--weights", choices=OPEN_MAGVIT2_WEIGHTS,
                        help="ema: LitEma's averages (the default when present, as SEED-Voken evaluates); model: the "
                        "trained weights.")  # fmt: skip
    parser.add_argument("--image_size", type=int, default=256, help="Training resolution, recorded in the config.")
    parser.add_argument("--allow_pickle", action="store_true",
                        help="Load with weights_only=False: runs code pickled in the file. Only for files you trust.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    model = convert_open_magvit2(args.ckpt, weights=args.weights, sample_size=args.image_size,
                                 allow_pickle=args.allow_pickle)  # fmt: skip
    words = sys.argv[1:] if argv is None else argv
    command = "python conversion/convert_open_magvit2.py " + shlex.join(words)
    save_converted_open_magvit2(model, args.dst, str(args.ckpt), command)
    print(f"wrote {args.dst}: {model.codebook_size} codes ({model.config.latent_channels} bits), "
          f"downsampling ×{model.downsample_factor}")  # fmt: skip


if __name__ == "__main__":
    main()
