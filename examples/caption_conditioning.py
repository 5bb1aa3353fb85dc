"""Captions for the prior training scripts (train_prior.py, train_diffusion.py): the text tokenizer (trained on the
training captions, or any AutoTokenizer), captions turned into the prefix ids of the prior — or, with a text encoder,
into the states a cross-attention prior attends to (text_encoder_conditioning.py) — and the fixed prompts of the
validation grids. (Prompt dropout is the prefix dropout of code_prior_training.py.)"""

import argparse

from accelerate.logging import get_logger
from text_encoder_conditioning import add_text_encoder_arguments, prepare_text_encoder, uses_text_encoder

from vq_hub.data import set_code_format
from vq_hub.text import TOKENIZER_KINDS, encode_prompts, load_text_tokenizer, train_caption_tokenizer

logger = get_logger(__name__)


def add_caption_arguments(parser: argparse.ArgumentParser) -> None:
    text = parser.add_argument_group("text conditioning (text-to-image priors)")
    text.add_argument("--caption_column", help="Condition on this column of captions (encode_dataset.py "
                      "--caption_column stores it): a text-to-image prior; class labels are then ignored.")  # fmt: skip
    text.add_argument("--text_tokenizer_name_or_path", help="An AutoTokenizer folder or Hub id (default: train one "
                      "on the training captions with the `tokenizers` library).")  # fmt: skip
    text.add_argument("--text_tokenizer_type", default="word", choices=TOKENIZER_KINDS,
                      help="The tokenizer trained on the captions: one token per word, or byte-level BPE.")  # fmt: skip
    text.add_argument("--text_vocab_size", type=int, default=1000, help="Largest BPE vocabulary (--text_tokenizer_type "
                      "bpe).")  # fmt: skip
    text.add_argument("--max_text_length", type=int, help="Longest prompt in tokens, the prior's text length "
                      "(default: the longest training caption).")  # fmt: skip
    text.add_argument("--validation_prompts", nargs="+", help="Prompts of the sample grids, a row each (default: the "
                      "first 4 distinct validation captions).")  # fmt: skip
    add_text_encoder_arguments(parser)


def prepare_captions(args: argparse.Namespace, info: dict, train_dataset, validation_dataset):
    """With `--caption_column`: `(tokenizer, train, validation, prompts)` — the splits with `prefix_ids` /
    `prefix_mask` columns, `info` updated with the prefix vocabulary (and no classes) — else `(None, train,
    validation, None)`."""
    if not args.caption_column:
        if uses_text_encoder(args):
            raise SystemExit("--text_encoder_name_or_path / --text_encoder_type need --caption_column (the captions)")
        return None, train_dataset, validation_dataset, None
    if args.unconditional:
        raise SystemExit("--unconditional and --caption_column contradict each other: give one")
    column = args.caption_column
    if column not in train_dataset.column_names:
        raise SystemExit(f"--caption_column {column}: the encoded dataset has no such column "
                         f"({train_dataset.column_names}); encode it with encode_dataset.py --caption_column")  # fmt: skip
    if uses_text_encoder(args):
        tokenizer, train_dataset, validation_dataset = prepare_text_encoder(args, info, train_dataset,
                                                                            validation_dataset)  # fmt: skip
        return tokenizer, train_dataset, validation_dataset, validation_prompts(args, train_dataset, validation_dataset)
    captions = train_dataset.with_format(None)[column]
    if args.text_tokenizer_name_or_path:
        tokenizer = load_text_tokenizer(args.text_tokenizer_name_or_path)
        max_length = args.max_text_length or max(len(ids) for ids in tokenizer(captions)["input_ids"])
        tokenizer.model_max_length = max_length
    else:
        tokenizer = train_caption_tokenizer(captions, kind=args.text_tokenizer_type, vocab_size=args.text_vocab_size,
                                            max_length=args.max_text_length)  # fmt: skip
        max_length = tokenizer.model_max_length

    def tokenize(texts: list[str]) -> dict:
        try:
            ids, mask = encode_prompts(tokenizer, texts, max_length, name="caption")
        except ValueError as error:
            raise SystemExit(f"{error} (--max_text_length)") from None
        return {"prefix_ids": ids.tolist(), "prefix_mask": mask.tolist()}

    def with_prefix(dataset):
        dataset = dataset.with_format(None).map(tokenize, batched=True, input_columns=[column], keep_in_memory=True,
                                                desc="tokenizing captions")  # fmt: skip
        set_code_format(dataset)
        return dataset

    train_dataset = with_prefix(train_dataset)
    if validation_dataset is not None:
        validation_dataset = with_prefix(validation_dataset)
    info.update(num_classes=0, prefix_vocab_size=len(tokenizer), prefix_length=max_length)
    logger.info(f"text: {type(tokenizer).__name__} with {len(tokenizer)} tokens, prompts of up to {max_length} "
                "tokens")  # fmt: skip
    return tokenizer, train_dataset, validation_dataset, validation_prompts(args, train_dataset, validation_dataset)


def validation_prompts(args: argparse.Namespace, train_dataset, validation_dataset) -> list[str]:
    """`--validation_prompts`, else the first 4 distinct validation (or training) captions."""
    prompts = args.validation_prompts
    if not prompts:
        source = validation_dataset if validation_dataset is not None else train_dataset
        prompts = list(dict.fromkeys(source.with_format(None)[args.caption_column][:1000]))[:4]
    logger.info(f"grids of {prompts}")
    return prompts
