"""Convert a diffusers `VQModel` (folder or Hub id) into a vq_hub `VQVAEModel` folder.

python conversion/convert_diffusers_vqmodel.py --src amused/amused-256 --subfolder vqvae --dst amused-vqvae
"""

import argparse

from vq_hub.conversion import convert_diffusers_vqmodel, save_converted


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", required=True, help="A diffusers VQModel folder or Hub repository id.")
    parser.add_argument("--subfolder", help="The VQVAEModel's subfolder in a pipeline repository, e.g. vqvae.")
    parser.add_argument("--revision")
    parser.add_argument("--dst", required=True, help="Output folder (loads with vq_hub.VQVAEModel.from_pretrained).")
    parser.add_argument(
        "--legacy_beta",
        action="store_true",
        help="Keep β on the codebook term, as diffusers and taming train (default: on commitment).",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    options = {key: value for key, value in (("subfolder", args.subfolder), ("revision", args.revision)) if value}
    model = convert_diffusers_vqmodel(args.src, legacy_beta=args.legacy_beta, **options)
    save_converted(
        model, args.dst, f"diffusers VQModel {args.src}" + (f" ({args.subfolder})" if args.subfolder else "")
    )
    print(f"wrote {args.dst}: {model.codebook_size} codes, downsampling ×{model.downsample_factor}")


if __name__ == "__main__":
    main()
