"""Train a discrete-diffusion prior (a transformers masked LM that denoises code grids) with Accelerate.

    accelerate launch examples/train_diffusion.py --codes_dir codes-fashion --corruption mask \
        --max_train_steps 3000 --output_dir diffusion-fashion

The result is a whole pipeline: `VQPipeline.from_pretrained("diffusion-fashion")(num_steps=50)`. The denoiser is
`BertForMaskedLM` by default (`--model_type`: any `AutoModelForMaskedLM` type, or `--config_name_or_path`); it sees
`[class token, x_t]` and predicts x_0 at every position. With `--caption_column` it is MUSE style: the denoiser sees
`[text tokens, BOS, x_t]`, saved as a `VQDiscreteDiffusionTextToImagePipeline` with its tokenizer; with a text encoder
(`--text_encoder_name_or_path`, or `--text_encoder_type`) the denoiser cross-attends to its states, saved as a
`VQDiscreteDiffusionTextEncoderPipeline`. The loop is shared with train_prior.py (code_prior_training.py).
"""

import argparse
import functools
from functools import partial

import torch
from accelerate.utils import extract_model_from_parallel
from code_prior_training import add_arguments, build_transformer, start_tokens, train
from text_encoder_conditioning import TextConditionedPrior, text_inputs
from transformers import AutoModelForMaskedLM

from vq_hub import (
    CodeVocabulary, DiscreteDiffusionScheduler, VQDiscreteDiffusionPipeline, VQDiscreteDiffusionTextEncoderPipeline,
    VQDiscreteDiffusionTextToImagePipeline, denoiser_config,
)  # fmt: skip
from vq_hub.models.priors import denoising_loss
from vq_hub.schedulers.scheduling_discrete_diffusion import CORRUPTIONS, SCHEDULES
from vq_hub.streaming import check_streaming_arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser, output_dir="diffusion-output")
    parser.add_argument("--model_type", default="bert", help="Any AutoModelForMaskedLM model type.")
    diffusion = parser.add_argument_group("diffusion")
    diffusion.add_argument("--corruption", default="mask", choices=CORRUPTIONS)
    diffusion.add_argument("--num_train_timesteps", type=int, default=100)
    diffusion.add_argument("--schedule", default="cosine", choices=SCHEDULES)
    diffusion.add_argument("--num_steps", type=int, default=16, help="Denoising steps of the sample grids.")
    args = parser.parse_args(argv)
    check_streaming_arguments(parser, args)
    return args


def scheduler_for(args: argparse.Namespace, denoiser) -> DiscreteDiffusionScheduler:
    """The scheduler of the flags, with the denoiser's codebook size and mask token (built once, not every step)."""
    config = extract_model_from_parallel(denoiser).config
    return make_scheduler(args.num_train_timesteps, config.codebook_size, args.corruption, config.mask_token_id,
                          args.schedule)  # fmt: skip


@functools.cache
def make_scheduler(num_train_timesteps: int, codebook_size: int, corruption: str, mask_token_id: int, schedule: str):
    return DiscreteDiffusionScheduler(num_train_timesteps, codebook_size, corruption, mask_token_id, schedule)


def diffusion_loss(args, denoiser, batch: dict, reduction: str = "mean", training: bool = True):
    """Corrupt each grid at a random timestep (global RNG: resumable) and score the prediction of the clean codes
    from `[prefix, condition token, x_t]` (class and prompt dropout while training)."""
    scheduler = scheduler_for(args, denoiser)
    vocabulary = CodeVocabulary.from_config(extract_model_from_parallel(denoiser).config)
    codes = batch["codes"]
    timesteps = torch.randint(1, scheduler.config.num_train_timesteps + 1, (codes.shape[0],), device=codes.device)
    noisy = scheduler.add_noise(codes, timesteps, validate=False)  # drawn in [1, T] just above: no check (a sync)
    start, start_mask = start_tokens(vocabulary, batch, args.class_dropout if training else 0.0,
                                     args.prompt_dropout if training else 0.0)  # fmt: skip
    tokens = torch.cat([start, noisy], dim=1)
    # All ones without a prefix: None then, so transformers skips its check of the mask (a host sync per step).
    attention_mask = torch.cat([start_mask, torch.ones_like(noisy)], dim=1) if vocabulary.prefix_length else None
    text = text_inputs(batch, args.prompt_dropout if training else 0.0)  # a text encoder's captions, if any
    logits = denoiser(input_ids=tokens, attention_mask=attention_mask, **text).logits[
        :, start.shape[1] :, : vocabulary.codebook_size
    ]
    mask_token_id = vocabulary.mask_token_id if args.corruption == "mask" else None
    return denoising_loss(logits, codes, noisy, mask_token_id, reduction=reduction)


def make_pipeline(args, vqvae, denoiser, tokenizer=None):
    scheduler = scheduler_for(args, denoiser)
    if tokenizer is None:
        return VQDiscreteDiffusionPipeline(vqvae, denoiser, scheduler)
    if isinstance(denoiser, TextConditionedPrior):
        return VQDiscreteDiffusionTextEncoderPipeline(vqvae, denoiser.pipeline_text_encoder, tokenizer,
                                                      denoiser.prior, scheduler)  # fmt: skip
    return VQDiscreteDiffusionTextToImagePipeline(vqvae, tokenizer, denoiser, scheduler)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    return train(
        args, argv, "train_diffusion.py",
        build_model=partial(build_transformer, args, auto_class=AutoModelForMaskedLM, config_helper=denoiser_config,
                            with_mask_token=True),
        loss_fn=partial(diffusion_loss, args),
        make_pipeline=partial(make_pipeline, args),
        sample_kwargs={"num_steps": args.num_steps},
    )  # fmt: skip


if __name__ == "__main__":
    main()
