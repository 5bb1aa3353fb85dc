"""The flags and model construction that select a two-level VQ-VAE-2 tokenizer (`HierarchicalVQModel`) in
train_vqgan.py. The quantizer flags of train_vqgan.py apply to both levels; the `--top_*` flags size the top level;
a config file (`--model_config_name_or_path`, a HierarchicalVQModel config.json) sets every option per level."""

import argparse

from vq_hub import HierarchicalVQModel, VQVAEModel


def add_hierarchical_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("VQ-VAE-2 (two levels of codes)")
    group.add_argument("--hierarchical", action="store_true",
                       help="Train a HierarchicalVQModel: a top grid of coarse codes and a bottom grid of fine codes "
                       "quantized knowing the top (the quantizer flags apply to both levels).")  # fmt: skip
    group.add_argument("--top_block_out_channels", type=int, nargs="+", default=[128, 128],
                       help="The top encoder/decoder; the top grid is the bottom grid downsampled by "
                       "2 ** (entries - 1).")  # fmt: skip
    group.add_argument(
        "--top_latent_channels", type=int, help="Channels of the top latents (default: --latent_channels)."
    )
    group.add_argument("--top_num_vq_embeddings", type=int, help="Top codebook size (default: --num_vq_embeddings).")
    group.add_argument("--top_fsq_levels", type=int, nargs="+", help="Top FSQ levels (default: --fsq_levels).")
    group.add_argument("--init_from_single_level",
                       help="A trained VQVAEModel (folder or Hub id) with the same --block_out_channels and "
                       "--latent_channels: its image encoder and decoder start the new model (the top level, the "
                       "quantizers and the decoder's input convolution start fresh).")  # fmt: skip
    group.add_argument("--bottom_dropout", type=float, default=0.0,
                       help="Fraction of training images decoded without their bottom codes, so that top-only "
                       "decodes mean something (0: the reference model).")  # fmt: skip


def build_hierarchical_model(args: argparse.Namespace, quantizer: dict) -> HierarchicalVQModel:
    """A HierarchicalVQModel of the flags; `quantizer` holds the quantizer options of the shared flags."""
    top_quantizer = dict(quantizer)
    if args.top_num_vq_embeddings:
        top_quantizer["num_vq_embeddings"] = args.top_num_vq_embeddings
    if args.top_fsq_levels:
        top_quantizer["fsq_levels"] = args.top_fsq_levels
    model = HierarchicalVQModel(
        in_channels=args.in_channels,
        out_channels=args.in_channels,
        block_out_channels=tuple(args.block_out_channels),
        layers_per_block=args.layers_per_block,
        latent_channels=args.latent_channels,
        vq_embed_dim=args.vq_embed_dim,
        norm_num_groups=args.norm_num_groups,
        sample_size=args.resolution[0] if len(args.resolution) == 1 else list(args.resolution),
        top_block_out_channels=tuple(args.top_block_out_channels),
        top_latent_channels=args.top_latent_channels,
        top_quantizer=top_quantizer,
        bottom_quantizer=quantizer,
        bottom_dropout=args.bottom_dropout,
    )
    if args.init_from_single_level:
        copy_image_encoder_and_decoder(VQVAEModel.from_pretrained(args.init_from_single_level), model)
    return model


def copy_image_encoder_and_decoder(source: VQVAEModel, model: HierarchicalVQModel) -> None:
    """Start `model`'s image encoder and decoder from a trained single-level tokenizer's (diffusers' `Encoder` and
    `Decoder` in both, under the same weight names)."""
    ours = model.state_dict()
    theirs = {key: value for key, value in source.state_dict().items() if key.startswith(("encoder.", "decoder."))}
    mismatched = [key for key, value in theirs.items() if key not in ours or ours[key].shape != value.shape]
    if mismatched:
        raise SystemExit(f"--init_from_single_level: its encoder/decoder differ from this model's ({mismatched[:3]} …): "
                         "give the same --in_channels, --block_out_channels, --latent_channels and --layers_per_block")  # fmt: skip
    model.load_state_dict(theirs, strict=False)
