"""Convert a taming-transformers VQGAN checkpoint (`.ckpt` + YAML config) into a vq_hub `VQVAEModel` folder.

    python conversion/convert_taming_vqgan.py --ckpt vqgan_imagenet_f16_1024/ckpts/last.ckpt \
        --config vqgan_imagenet_f16_1024/configs/model.yaml --dst vqgan-imagenet-f16-1024
"""

import argparse
from pathlib import Path

from safetensors.torch import save_file

from vq_hub.conversion import convert_taming_vqgan, save_converted


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", required=True, help="The Lightning checkpoint (or a state-dict file).")
    parser.add_argument("--config", required=True, help="The YAML config it was trained with.")
    parser.add_argument("--dst", required=True, help="Output folder (loads with vq_hub.VQVAEModel.from_pretrained).")
    parser.add_argument(
        "--legacy_beta",
        action="store_true",
        help="Keep taming's β on the codebook term for further training (default: on commitment).",
    )
    parser.add_argument(
        "--save_discriminator",
        action="store_true",
        help="Also write the checkpoint's loss.* weights (discriminator, LPIPS) to taming_loss.safetensors.",
    )
    parser.add_argument(
        "--allow_pickle",
        action="store_true",
        help="Load with weights_only=False: runs code pickled in the file. Only for files you trust.",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    model, loss = convert_taming_vqgan(args.ckpt, args.config, legacy_beta=args.legacy_beta,
                                       allow_pickle=args.allow_pickle)  # fmt: skip
    save_converted(model, args.dst, str(args.ckpt), {"config": str(args.config)})
    if args.save_discriminator and loss:
        save_file({key: value.contiguous() for key, value in loss.items()}, Path(args.dst) / "taming_loss.safetensors")
    print(
        f"wrote {args.dst}: {model.codebook_size} codes, downsampling ×{model.downsample_factor}; "
        f"{len(loss)} loss.* tensors {'saved' if args.save_discriminator else 'left out'}"
    )


if __name__ == "__main__":
    main()
