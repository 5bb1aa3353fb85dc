"""What train_prior.py and train_diffusion.py add for the codes of a two-level tokenizer (VQ-VAE-2): `--level` picks
the level a prior models, and the result is saved as a `VQHierarchicalPipeline`. Train the top prior first
(`train_prior.py --level top`: a class-conditional prior over the top grid, saved with the tokenizer as a top-only
pipeline), then the bottom prior (`--level bottom --top_prior_name_or_path <the top run>`: it sees the top codes as a
prefix from a second vocabulary, and is saved with that top prior as the whole pipeline)."""

import argparse

import torch

from vq_hub import VQHierarchicalPipeline, VQPipeline
from vq_hub.code_levels import level_names


def add_level_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("VQ-VAE-2 (codes of a two-level tokenizer)")
    group.add_argument("--level", choices=["top", "bottom"],
                       help="Which level's prior to train; the bottom prior sees the top codes as a prefix.")  # fmt: skip
    group.add_argument("--top_prior_name_or_path",
                       help="With --level bottom: the pipeline saved by the top prior's run, whose top prior is saved "
                       "with this bottom prior.")  # fmt: skip


def check_level(args: argparse.Namespace, info: dict, vqvae, allow_top: bool = True):
    """The top prior of `--top_prior_name_or_path` for a bottom prior (None otherwise), once the flags are checked
    against the codes and the tokenizer."""
    levels = info.get("levels")
    if levels is None:
        if args.level or args.top_prior_name_or_path:
            raise SystemExit("--level / --top_prior_name_or_path apply to the codes of a two-level tokenizer")
        return None
    if level_names(vqvae) != tuple(levels):
        raise SystemExit(f"the tokenizer's levels {level_names(vqvae)} are not those of the codes {levels}")
    if args.level == "top":
        if not allow_top:
            raise SystemExit("the top prior of a VQ-VAE-2 pipeline is autoregressive: train it with train_prior.py "
                             "--level top (the bottom prior may be either kind)")  # fmt: skip
        if args.top_prior_name_or_path:
            raise SystemExit("--top_prior_name_or_path goes with --level bottom")
        return None
    if not args.top_prior_name_or_path:
        raise SystemExit("--level bottom needs --top_prior_name_or_path: the output folder of the top prior's run "
                         "(train_prior.py --level top)")  # fmt: skip
    top = VQPipeline.from_pretrained(args.top_prior_name_or_path)
    if not isinstance(top, VQHierarchicalPipeline):
        raise SystemExit(f"--top_prior_name_or_path {args.top_prior_name_or_path} holds a {type(top).__name__}, not "
                         "the VQHierarchicalPipeline of a top prior's run")  # fmt: skip
    ours, theirs = vqvae.state_dict(), top.vqvae.state_dict()
    if ours.keys() != theirs.keys() or not all(torch.equal(ours[k], theirs[k].to(ours[k].device)) for k in ours):
        raise SystemExit(f"--top_prior_name_or_path {args.top_prior_name_or_path} was trained on another tokenizer "
                         "than these codes'")  # fmt: skip
    if top.vocabulary.num_classes != info["num_classes"] and not args.unconditional:
        raise SystemExit(f"the top prior has {top.vocabulary.num_classes} classes, these codes {info['num_classes']}")
    return top.top_prior


def level_pipeline(pipe: VQPipeline, level: str, top_prior) -> VQHierarchicalPipeline:
    """The single-level pipeline a script builds around its prior, as the VQ-VAE-2 pipeline of `level`: the top prior
    alone (top-only decodes), or the top prior with this bottom prior (and the script's scheduler, for a denoiser)."""
    prior = getattr(pipe, pipe.prior_component)
    if level == "top":
        return VQHierarchicalPipeline(vqvae=pipe.vqvae, top_prior=prior)
    return VQHierarchicalPipeline(vqvae=pipe.vqvae, top_prior=top_prior, bottom_prior=prior,
                                  scheduler=getattr(pipe, "scheduler", None))  # fmt: skip
