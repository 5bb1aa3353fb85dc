"""Convert a LlamaGen class-conditional GPT checkpoint (e.g. c2i_B_256.pt) into a vq_hub prior, or — given the
converted tokenizer — a whole `VQAutoregressivePipeline` folder.

    python conversion/convert_llamagen_vq.py --ckpt vq_ds16_c2i.pt --dst llamagen-vq-ds16-c2i
    python conversion/convert_llamagen_gpt.py --ckpt c2i_B_256.pt --tokenizer llamagen-vq-ds16-c2i \
        --dst llamagen-c2i-b-256
"""

import argparse
import shlex
import sys

from vq_hub.conversion_llamagen_gpt import (
    LLAMAGEN_GPT_WEIGHT_KEYS, convert_llamagen_gpt_to_folder, describe_converted,
)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", required=True, help="LlamaGen's GPT checkpoint (.pt), e.g. c2i_B_256.pt.")
    parser.add_argument("--dst", required=True, help="Output folder (a pipeline with --tokenizer, else the prior).")
    parser.add_argument("--tokenizer", help="The converted LlamaGen tokenizer folder (convert_llamagen_vq.py): the "
                        "output is then a VQAutoregressivePipeline (VQPipeline.from_pretrained).")  # fmt: skip
    parser.add_argument("--image_size", type=int, default=256,
                        help="The resolution the GPT was trained for: 256 for c2i_*_256.pt, 384 for c2i_*_384.pt "
                        "(its grid is this over the tokenizer's downsampling, 16).")  # fmt: skip
    parser.add_argument("--num_heads", type=int,
                        help="Attention heads, only for a width none of LlamaGen's GPT_models has.")  # fmt: skip
    parser.add_argument("--weights", choices=LLAMAGEN_GPT_WEIGHT_KEYS,
                        help="The checkpoint entry to convert (default: model, then module, then state_dict, then "
                        "ema; FSDP checkpoints are bare state dicts).")  # fmt: skip
    parser.add_argument("--allow_pickle", action="store_true",
                        help="Load with weights_only=False: runs code pickled in the file. Only for files you trust.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    words = sys.argv[1:] if argv is None else argv
    command = "python conversion/convert_llamagen_gpt.py " + shlex.join(words)
    converted = convert_llamagen_gpt_to_folder(
        args.ckpt, args.dst, command, tokenizer=args.tokenizer, image_size=args.image_size, num_heads=args.num_heads,
        weights=args.weights, allow_pickle=args.allow_pickle,
    )  # fmt: skip
    print(f"wrote {args.dst}: {describe_converted(converted)}")


if __name__ == "__main__":
    main()
