"""Train an autoregressive prior (a transformers causal LM) over the codes of an encoded dataset, with Accelerate.

    accelerate launch examples/train_prior.py --codes_dir codes-fashion --max_train_steps 3000 \
        --output_dir prior-fashion

The result is a whole pipeline: `VQPipeline.from_pretrained("prior-fashion")(batch_size=4, class_labels=[0, 1, 2, 3])`.
With `--caption_column` it is a text-to-image prior, DALL-E style: one causal LM over `[text tokens, BOS, codes]`,
saved as a `VQAutoregressiveTextToImagePipeline` with its tokenizer (`pipe(prompt=[...])`); with a text encoder
(`--text_encoder_name_or_path`, or `--text_encoder_type` to train one from scratch) it is Parti style, the prior
cross-attending to the encoder's states, saved as a `VQAutoregressiveTextEncoderPipeline`.
The prior is `GPT2LMHeadModel` by default; `--model_type llama` (any `AutoModelForCausalLM` type) or
`--config_name_or_path` choose another. The loop is shared with train_diffusion.py (code_prior_training.py).
"""

import argparse
import math
from functools import partial

import torch
from accelerate.utils import extract_model_from_parallel
from code_prior_training import add_arguments, build_transformer, start_tokens, train
from text_encoder_conditioning import TextConditionedPrior, text_inputs
from transformers import AutoModelForCausalLM

from vq_hub import (
    CodeVocabulary, VQAutoregressivePipeline, VQAutoregressiveTextEncoderPipeline, VQAutoregressiveTextToImagePipeline,
    autoregressive_prior_config,
)  # fmt: skip
from vq_hub.models.priors import next_code_loss


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser, output_dir="prior-output")
    parser.add_argument("--model_type", default="gpt2", help="Any AutoModelForCausalLM model type, e.g. llama.")
    parser.add_argument("--top_k", type=int, help="For the sample grids.")
    return parser.parse_args(argv)


def prior_loss(args, prior, batch: dict, reduction: str = "mean", training: bool = True) -> torch.Tensor:
    """Next-code cross-entropy of `[prefix, condition token, codes]` (class and prompt dropout while training)."""
    vocabulary = CodeVocabulary.from_config(extract_model_from_parallel(prior).config)
    start, start_mask = start_tokens(vocabulary, batch, args.class_dropout if training else 0.0,
                                     args.prompt_dropout if training else 0.0)  # fmt: skip
    codes = batch["codes"]
    tokens = torch.cat([start, codes], dim=1)
    # The mask is 0 on empty prefix slots only (a vq_hub 0.1 vocabulary's BOS is also its PAD: never padding here).
    # Without a prefix it is all ones: None then, so transformers skips its check of the mask (a host sync per step).
    attention_mask = torch.cat([start_mask, torch.ones_like(codes)], dim=1) if vocabulary.prefix_length else None
    text = text_inputs(batch, args.prompt_dropout if training else 0.0)  # a text encoder's captions, if any
    logits = prior(input_ids=tokens, attention_mask=attention_mask, **text).logits
    losses = next_code_loss(logits, tokens, vocabulary.codebook_size, reduction="none",
                            prefix_length=vocabulary.prefix_length)  # fmt: skip
    return losses.mean() if reduction == "mean" else losses.mean(dim=1)


def with_bits_per_code(figures: dict) -> dict:
    return {**figures, "bits_per_code": figures["loss"] / math.log(2)}


def make_pipeline(vqvae, prior, tokenizer=None):
    if tokenizer is None:
        return VQAutoregressivePipeline(vqvae=vqvae, prior=prior)
    if isinstance(prior, TextConditionedPrior):
        return VQAutoregressiveTextEncoderPipeline(vqvae, prior.pipeline_text_encoder, tokenizer, prior.prior)
    return VQAutoregressiveTextToImagePipeline(vqvae=vqvae, tokenizer=tokenizer, prior=prior)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    return train(
        args, argv, "train_prior.py",
        build_model=partial(build_transformer, args, auto_class=AutoModelForCausalLM,
                            config_helper=autoregressive_prior_config),
        loss_fn=partial(prior_loss, args),
        make_pipeline=make_pipeline,
        sample_kwargs={"top_k": args.top_k},
        metrics=with_bits_per_code,
    )  # fmt: skip


if __name__ == "__main__":
    main()
