"""`vq-hub convert KIND SRC --out DIR`: bring a tokenizer trained elsewhere into a vq_hub tokenizer folder
(`VQVAEModel`, or `MagvitV2Tokenizer` for Open-MAGVIT2), or LlamaGen's GPT into a prior or a whole pipeline (the
library's converters; `conversion/*.py` are the same as
scripts)."""

import shlex

from ._common import CommandError

KINDS = {
    "diffusers": "a diffusers VQModel folder or Hub id (aMUSEd's and LDM's VQ autoencoders among them)",
    "taming": "a taming-transformers VQGAN checkpoint (.ckpt) with --config, its YAML",
    "llamagen-vq": "a LlamaGen VQ tokenizer checkpoint (vq_ds16_c2i.pt, vq_ds8_c2i.pt, …)",
    "maskgit-vqgan": "an open-muse MaskGitVQGAN folder or Hub id (MaskGIT's VQGAN)",
    "llamagen-gpt": "a LlamaGen class-conditional GPT checkpoint (c2i_B_256.pt, …), with --tokenizer a pipeline",
    "open-magvit2": "an Open-MAGVIT2 (SEED-Voken) LFQ tokenizer checkpoint (.ckpt)",
}
# Which options each kind takes (anything else given is refused, not ignored).
OPTIONS = {
    "diffusers": {"subfolder", "revision", "legacy_beta"},
    "taming": {"config", "legacy_beta", "allow_pickle"},
    "llamagen-vq": {"weights", "allow_pickle", "image_size", "no_codebook_l2_norm"},
    "maskgit-vqgan": {"revision"},
    "llamagen-gpt": {"weights", "allow_pickle", "image_size", "tokenizer", "num_heads"},
    "open-magvit2": {"weights", "allow_pickle", "image_size"},
}


def register(commands) -> None:
    kinds = "; ".join(f"{kind}: {what}" for kind, what in KINDS.items())
    parser = commands.add_parser("convert", help="Convert a tokenizer from diffusers, taming-transformers, LlamaGen, "
                                 "MaskGIT or Open-MAGVIT2, or LlamaGen's GPT, into a vq_hub folder.",
                                 description=f"{__doc__} Kinds — {kinds}.")  # fmt: skip
    parser.add_argument("kind", choices=list(KINDS), metavar="KIND", help=f"One of {', '.join(KINDS)}.")
    parser.add_argument("src", metavar="SRC", help="The checkpoint file, folder or Hub repository id to convert.")
    parser.add_argument("--out", required=True, help="The folder to write (a tokenizer loads with "
                        "vq_hub.load_tokenizer, a pipeline with VQPipeline.from_pretrained).")  # fmt: skip
    parser.add_argument("--config", help="taming: the YAML config the checkpoint was trained with.")
    parser.add_argument("--subfolder", help="diffusers: the VQModel's subfolder in a pipeline repository, e.g. vqvae.")
    parser.add_argument("--revision", help="diffusers, maskgit-vqgan: the Hub revision of SRC.")
    parser.add_argument("--legacy-beta", dest="legacy_beta", action="store_true",
                        help="diffusers, taming: keep β on the codebook term, as they train (default: commitment).")
    parser.add_argument("--weights", choices=("ema", "model", "module", "state_dict"),
                        help="llamagen-vq, llamagen-gpt, open-magvit2: the checkpoint entry to convert (default: "
                        "LlamaGen's order — ema, model, state_dict for a tokenizer; model, module, state_dict, ema for "
                        "a GPT; open-magvit2: ema when present, else model).")
    parser.add_argument("--image-size", dest="image_size", type=int,
                        help="llamagen-vq, open-magvit2: the training resolution recorded in the config; llamagen-gpt: "
                        "the one the GPT was trained for, 256 or 384, which sets its grid (default 256).")
    parser.add_argument("--tokenizer", help="llamagen-gpt: the converted LlamaGen tokenizer folder (llamagen-vq); "
                        "the output is then a whole VQAutoregressivePipeline.")
    parser.add_argument("--num-heads", dest="num_heads", type=int,
                        help="llamagen-gpt: attention heads, only for a width none of LlamaGen's models has.")
    parser.add_argument("--no-codebook-l2-norm", dest="no_codebook_l2_norm", action="store_true",
                        help="llamagen-vq: the tokenizer was trained with codebook_l2_norm=False.")
    parser.add_argument("--allow-pickle", dest="allow_pickle", action="store_true",
                        help="taming, llamagen-vq, llamagen-gpt, open-magvit2: load with weights_only=False, which runs code "
                        "pickled in the file. Only for files you trust.")  # fmt: skip
    parser.set_defaults(run=run)


def given_options(args) -> set[str]:
    """The kind-specific options set on the command line (any kind's: the ones this kind does not take are refused)."""
    return {name for name in set().union(*OPTIONS.values()) if getattr(args, name) not in (None, False)}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def reproducing_command(args) -> str:
    """The command line that makes this folder again, for its card (built from the parsed flags)."""
    words = ["vq-hub", "convert", args.kind, str(args.src), "--out", str(args.out)]
    for name in sorted(given_options(args)):
        value = getattr(args, name)
        words += [flag(name)] + ([] if value is True else [str(value)])
    return shlex.join(words)


def run(args) -> str:
    foreign = sorted(given_options(args) - OPTIONS[args.kind])
    if foreign:
        raise CommandError(f"{', '.join(map(flag, foreign))} does not apply to {args.kind} (it takes: "
                           f"{', '.join(map(flag, sorted(OPTIONS[args.kind]))) or 'none'})")
    if args.kind == "taming" and not args.config:
        raise CommandError("taming needs --config, the YAML the checkpoint was trained with")
    command = reproducing_command(args)
    try:
        if args.kind == "llamagen-gpt":  # a prior or a pipeline, not a tokenizer
            return convert_llamagen_gpt(args, command)
        model = CONVERTERS[args.kind](args, command)
    except (ValueError, FileNotFoundError) as error:
        raise CommandError(f"{args.kind} {args.src}: {error}") from None
    dimensions = model.config.get("vq_embed_dim") or model.config.latent_channels
    return (f"wrote {args.out}: {model.codebook_size} codes of {dimensions} dimensions, downsampling "
            f"×{model.downsample_factor} (converted from {args.kind} {args.src})")  # fmt: skip


def convert_diffusers(args, command: str):
    from ..conversion import convert_diffusers_vqmodel, save_converted

    options = {key: value for key, value in (("subfolder", args.subfolder), ("revision", args.revision)) if value}
    model = convert_diffusers_vqmodel(args.src, legacy_beta=args.legacy_beta, **options)
    save_converted(model, args.out, f"diffusers VQModel {args.src}" + (f" ({args.subfolder})" if args.subfolder
                                                                          else ""), {"command": command})  # fmt: skip
    return model


def convert_taming(args, command: str):
    from ..conversion import convert_taming_vqgan, save_converted

    model, _ = convert_taming_vqgan(args.src, args.config, legacy_beta=args.legacy_beta, allow_pickle=args.allow_pickle)
    save_converted(model, args.out, str(args.src), {"config": str(args.config), "command": command})
    return model


def convert_llamagen(args, command: str):
    from ..conversion_llamagen_vq import convert_llamagen_vq, save_converted_llamagen_vq

    model = convert_llamagen_vq(args.src, weights=args.weights, codebook_l2_norm=not args.no_codebook_l2_norm,
                                sample_size=args.image_size or 256, allow_pickle=args.allow_pickle)  # fmt: skip
    save_converted_llamagen_vq(model, args.out, str(args.src), command)
    return model


def convert_maskgit(args, command: str):
    from ..conversion_maskgit_vqgan import convert_maskgit_vqgan, save_converted_maskgit_vqgan
    from ..hub import resolve_folder

    folder = resolve_folder(args.src, "SRC", **({"revision": args.revision} if args.revision else {}))
    model = convert_maskgit_vqgan(folder)
    save_converted_maskgit_vqgan(model, args.out, str(args.src), command)
    return model


def convert_llamagen_gpt(args, command: str) -> str:
    from ..conversion_llamagen_gpt import convert_llamagen_gpt_to_folder, describe_converted

    converted = convert_llamagen_gpt_to_folder(
        args.src, args.out, command, tokenizer=args.tokenizer, image_size=args.image_size or 256,
        num_heads=args.num_heads, weights=args.weights, allow_pickle=args.allow_pickle,
    )  # fmt: skip
    return f"wrote {args.out}: {describe_converted(converted)} (converted from {args.kind} {args.src})"


def convert_open_magvit2(args, command: str):
    from ..conversion_open_magvit2 import convert_open_magvit2, save_converted_open_magvit2

    model = convert_open_magvit2(args.src, weights=args.weights, sample_size=args.image_size or 256,
                                 allow_pickle=args.allow_pickle)  # fmt: skip
    save_converted_open_magvit2(model, args.out, str(args.src), command)
    return model


CONVERTERS = {"diffusers": convert_diffusers, "taming": convert_taming, "llamagen-vq": convert_llamagen,
              "maskgit-vqgan": convert_maskgit, "open-magvit2": convert_open_magvit2}  # fmt: skip
