"""Text for text-to-image priors: a small caption tokenizer trained with the `tokenizers` library (nothing downloaded),
any `AutoTokenizer` the user names, and prompts turned into the prefix ids of a prior (`CodeVocabulary.prefix_tokens`).

The tokenizer is an ordinary `PreTrainedTokenizerFast`: the text pipelines save it as their `tokenizer` component and
its vocabulary is the prior's prefix vocabulary (token id j is prefix id j). Its pad token fills the unused slots of
a prompt, with attention mask 0, so the empty prompt "" is the all-pad prefix — the unconditional input.
"""

import logging
from collections.abc import Iterable

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

PAD_TOKEN, UNK_TOKEN = "[PAD]", "[UNK]"
TOKENIZER_KINDS = ("word", "bpe")


def train_caption_tokenizer(
    captions: Iterable[str], kind: str = "word", vocab_size: int = 1000, min_frequency: int = 1,
    max_length: int | None = None,
) -> PreTrainedTokenizerFast:  # fmt: skip
    """A tokenizer trained on `captions` with the `tokenizers` library.

    `kind="word"`: one token per word seen (case and punctuation other than hyphens are dropped, so "T-shirt," and
    "t-shirt" are one word) — the right size for templated captions. `kind="bpe"`: byte-level BPE of at most
    `vocab_size` tokens, for open vocabularies. Either way `[PAD]` is id 0 and `[UNK]` id 1. `max_length` becomes the
    tokenizer's `model_max_length` (the prior's text length), else the longest training caption in tokens.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if kind not in TOKENIZER_KINDS:
        raise ValueError(f"`kind` must be one of {TOKENIZER_KINDS}, got {kind!r}")
    captions = [caption for caption in captions]
    if not captions or not all(isinstance(caption, str) for caption in captions):
        raise ValueError("`captions` must be a non-empty iterable of strings")
    special = [PAD_TOKEN, UNK_TOKEN]
    if kind == "word":
        tokenizer = Tokenizer(models.WordLevel(unk_token=UNK_TOKEN))
        tokenizer.normalizer = normalizers.Sequence(
            [normalizers.NFKC(), normalizers.Lowercase(), normalizers.Replace(Regex(r"[^\w\s-]"), " ")]
        )
        tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        trainer = trainers.WordLevelTrainer(special_tokens=special, min_frequency=min_frequency)
    else:
        tokenizer = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
        tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=special,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tokenizer.train_from_iterator(captions, trainer)
    longest = max(len(tokenizer.encode(caption).ids) for caption in captions)
    if max_length is not None and max_length < longest:
        raise ValueError(f"`max_length` {max_length} is shorter than the longest training caption ({longest} tokens)")
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD_TOKEN, unk_token=UNK_TOKEN,
                                   model_max_length=max_length or longest, padding_side="right")  # fmt: skip


def load_text_tokenizer(name_or_path: str, **kwargs) -> PreTrainedTokenizerBase:
    """Any tokenizer `AutoTokenizer` loads (a folder or a Hub id); one without a pad token gets one added, since the
    empty prompt is made of pads."""
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    return tokenizer


def known_words(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The tokens of `tokenizer` other than its special ones, in id order: a word-level caption tokenizer's
    vocabulary (what prompts can say)."""
    special = set(tokenizer.all_special_tokens)
    vocabulary = tokenizer.get_vocab()
    return [token for token in sorted(vocabulary, key=vocabulary.get) if token not in special]


def check_prompts(prompt, name: str = "prompt") -> list[str]:
    """A prompt or a list of prompts as a list of strings; anything else is a TypeError naming the argument."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(item, str) for item in prompt):
        return list(prompt)
    raise TypeError(f"`{name}` must be a string or a non-empty list of strings, got {prompt!r}")


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: list[str], max_length: int, name: str = "prompt",
    limit: str = "the prior's `prefix_length`",
) -> tuple[torch.LongTensor, torch.LongTensor]:  # fmt: skip
    """`(prefix ids, attention mask)`, both `(B, max_length)`: each prompt's token ids, right-padded with the pad
    token (mask 0). A prompt longer than `max_length` tokens (`limit` says whose) is a ValueError that says so (truncating would silently
    drop what was asked for); a word the tokenizer does not know is logged as a warning, and a prompt with two or more
    of them making a third of its words is a ValueError that lists the known words. The empty prompt (blank) is
    all pads — the unconditional input — also for tokenizers that would wrap it in special tokens ([CLS] [SEP])."""
    encoded = tokenizer(list(prompts), add_special_tokens=True, padding=False, truncation=False, verbose=False)
    encoded = {key: [[] if not prompt.strip() else row for prompt, row in zip(prompts, encoded[key])]
               for key in ("input_ids", "attention_mask")}  # fmt: skip
    too_long = [(prompt, len(ids)) for prompt, ids in zip(prompts, encoded["input_ids"]) if len(ids) > max_length]
    if too_long:
        prompt, length = too_long[0]
        raise ValueError(f"`{name}` {prompt!r} is {length} tokens long, but this pipeline's text length is "
                         f"{max_length} tokens ({limit}): shorten it")  # fmt: skip
    unknown = tokenizer.unk_token_id
    if unknown is not None:
        for prompt, ids in zip(prompts, encoded["input_ids"]):
            count = ids.count(unknown)
            if count >= 2 and 3 * count >= len(ids):  # what it asks for is lost: the prior would draw noise
                words = known_words(tokenizer)
                listed = ", ".join(words[:60]) + (f", … ({len(words)} in all)" if len(words) > 60 else "")
                tokens = tokenizer.convert_ids_to_tokens(ids)
                raise ValueError(f"`{name}` {prompt!r}: {count} of its {len(ids)} words are unknown to this "
                                 f"pipeline's tokenizer ({tokens}); it knows: {listed}")  # fmt: skip
            if count:
                logger.warning(f"`{name}` {prompt!r} has words this tokenizer does not know (encoded as "
                               f"{tokenizer.unk_token}): {tokenizer.convert_ids_to_tokens(ids)}")  # fmt: skip
    ids = torch.full((len(prompts), max_length), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), max_length), dtype=torch.long)
    for row, (token_ids, token_mask) in enumerate(zip(encoded["input_ids"], encoded["attention_mask"])):
        ids[row, : len(token_ids)] = torch.tensor(token_ids, dtype=torch.long)
        mask[row, : len(token_ids)] = torch.tensor(token_mask, dtype=torch.long)
    return ids, mask
