"""Train an autoregressive prior (a transformers causal LM) over the codes of an encoded dataset, with Accelerate.

    accelerate launch examples/train_prior.py --codes_dir codes-fashion --max_train_steps 3000 \
        --output_dir prior-fashion

The result is a whole pipeline: `VQPipeline.from_pretrained("prior-fashion")(batch_size=4, class_labels=[0, 1, 2, 3])`.
With `--caption_column` it is a text-to-image prior, DALL-E style: one causal LM over `[text tokens, BOS, codes]`,
saved as a `VQAutoregressiveTextToImagePipeline` with its tokenizer (`pipe(prompt=[...])`); with a text encoder
(`--text_encoder_name_or_path`, or `--text_encoder_type` to train one from scratch) it is Parti style, the prior
cross-attending to the encoder's states, saved as a `VQAutoregressiveTextEncoderPipeline`.
The prior is `GPT2LMHeadModel` by default; `--model_type llama` (any `AutoModelForCausalLM` type) or
`--config_name_or_path` choose another. For a binary tokenizer (LFQ, BSQ) `--bits_per_group g` trains a
`FactorizedCodePrior` instead: per-group embeddings and heads of 2^g, not one row per code (docs/priors.md).
The loop is shared with train_diffusion.py (code_prior_training.py).
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
    CodeVocabulary, FactorizedCodePrior, VQAutoregressivePipeline, VQAutoregressiveTextEncoderPipeline,
    VQAutoregressiveTextToImagePipeline, autoregressive_prior_config, factorized_prior_config,
)  # fmt: skip
from vq_hub.models.factorized_prior import factorized_code_loss
from vq_hub.models.priors import next_code_loss
from vq_hub.streaming import check_streaming_arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser, output_dir="prior-output")
    parser.add_argument("--model_type", default="gpt2", help="Any AutoModelForCausalLM model type, e.g. llama.")
    parser.add_argument("--top_k", type=int, help="For the sample grids.")
    factorized = parser.add_argument_group("factorised prior (binary tokenizers: LFQ, BSQ)")
    factorized.add_argument("--bits_per_group", type=int, help="Train a FactorizedCodePrior: each code's bits in "
                            "groups of this many, one embedding table and one head of 2^g per group.")  # fmt: skip
    factorized.add_argument("--independent_groups", action="store_true", help="With --bits_per_group: predict "
                            "the groups independently (a product distribution), not each given the earlier ones.")
    args = parser.parse_args(argv)
    check_streaming_arguments(parser, args)
    if args.independent_groups and args.bits_per_group is None:
        parser.error("--independent_groups needs --bits_per_group")
    if args.bits_per_group is not None and args.config_name_or_path:
        parser.error("--bits_per_group builds its own config: give it or --config_name_or_path, not both")
    return args


def build_prior(args, vqvae, info: dict):
    """A stock causal LM, or with `--bits_per_group` a factorised prior (refused for a non-binary tokenizer)."""
    if args.bits_per_group is None:
        return build_transformer(args, vqvae, info, auto_class=AutoModelForCausalLM,
                                 config_helper=autoregressive_prior_config)  # fmt: skip

    def factorized_config(vqvae, num_classes, **settings):
        return factorized_prior_config(vqvae, args.bits_per_group, num_classes,
                                       conditional_groups=not args.independent_groups, **settings)  # fmt: skip

    try:
        return build_transformer(args, vqvae, info, auto_class=AutoModelForCausalLM, config_helper=factorized_config)
    except ValueError as error:
        raise SystemExit(f"--bits_per_group {args.bits_per_group}: {error}") from None


def prior_loss(args, prior, batch: dict, reduction: str = "mean", training: bool = True) -> torch.Tensor:
    """Next-code cross-entropy of `[prefix, condition token, codes]` (class and prompt dropout while training)."""
    model = extract_model_from_parallel(prior)
    vocabulary = CodeVocabulary.from_config(model.config)
    start, start_mask = start_tokens(vocabulary, batch, args.class_dropout if training else 0.0,
                                     args.prompt_dropout if training else 0.0)  # fmt: skip
    codes = batch["codes"]
    tokens = torch.cat([start, codes], dim=1)
    # The mask is 0 on empty prefix slots only (a vq_hub 0.1 vocabulary's BOS is also its PAD: never padding here).
    # Without a prefix it is all ones: None then, so transformers skips its check of the mask (a host sync per step).
    attention_mask = torch.cat([start_mask, torch.ones_like(codes)], dim=1) if vocabulary.prefix_length else None
    text = text_inputs(batch, args.prompt_dropout if training else 0.0)  # a text encoder's captions, if any
    output = prior(input_ids=tokens, attention_mask=attention_mask, **text)
    prefix_length, codebook_size = vocabulary.prefix_length, vocabulary.codebook_size
    if isinstance(model, FactorizedCodePrior):  # the sum of the groups' cross-entropies: the code's NLL
        losses = factorized_code_loss(output.group_logits[:, prefix_length:-1], tokens[:, prefix_length + 1 :],
                                      codebook_size, model.config.bits_per_group, reduction="none")  # fmt: skip
    else:
        losses = next_code_loss(output.logits, tokens, codebook_size, reduction="none",
                                prefix_length=prefix_length)  # fmt: skip
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
        build_model=partial(build_prior, args),
        loss_fn=partial(prior_loss, args),
        make_pipeline=make_pipeline,
        sample_kwargs={"top_k": args.top_k},
        metrics=with_bits_per_code,
    )  # fmt: skip


if __name__ == "__main__":
    main()
