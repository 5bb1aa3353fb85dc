"""Convert MaskGIT's VQGAN as ported by open-muse (a `MaskGitVQGAN` folder or Hub id) into a vq_hub `VQVAEModel` folder.

    python conversion/convert_maskgit_vqgan.py --src openMUSE/maskgit-vqgan-imagenet-f16-256 --dst maskgit-vqgan
"""

import argparse
import shlex
import sys

from vq_hub.conversion_maskgit_vqgan import convert_maskgit_vqgan, save_converted_maskgit_vqgan
from vq_hub.hub import resolve_folder


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", required=True, help="A MaskGitVQGAN.save_pretrained folder, or its Hub repository id.")
    parser.add_argument("--revision", help="The Hub revision, when --src is a repository id.")
    parser.add_argument("--dst", required=True, help="Output folder (loads with vq_hub.VQVAEModel.from_pretrained).")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    folder = resolve_folder(args.src, "--src", **({"revision": args.revision} if args.revision else {}))
    model = convert_maskgit_vqgan(folder)
    words = sys.argv[1:] if argv is None else argv
    command = "python conversion/convert_maskgit_vqgan.py " + shlex.join(words)
    save_converted_maskgit_vqgan(model, args.dst, str(args.src), command)
    print(f"wrote {args.dst}: {model.codebook_size} codes of {model.config.vq_embed_dim} dimensions, "
          f"downsampling ×{model.downsample_factor}")  # fmt: skip


if __name__ == "__main__":
    main()
