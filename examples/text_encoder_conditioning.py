"""A text encoder for the prior training scripts (train_prior.py, train_diffusion.py): the prior cross-attends to its
states (Parti / MUSE style) and the run saves a `VQAutoregressiveTextEncoderPipeline` /
`VQDiscreteDiffusionTextEncoderPipeline` with the encoder and its tokenizer.

    --text_encoder_name_or_path google/flan-t5-base   a pretrained encoder, frozen: each distinct caption is encoded
                                                      once before training, no epoch runs the encoder again
    --text_encoder_type t5 | clip_text_model | bert   a small encoder built at random and trained with the prior

Rows carry a `caption_index` into those states (the empty caption last: prompt dropout picks it, the unconditional
input that guidance samples against); `TextConditionedPrior` looks them up, or runs the trained encoder on the
caption's tokens, and calls the prior with `encoder_hidden_states`.
"""

import argparse

import torch
from accelerate import PartialState
from accelerate.logging import get_logger

from vq_hub.data import CAPTION_INDEX_COLUMN, set_code_format
from vq_hub.models.cross_attention import (
    bidirectional_attention_mask, cross_attention_denoiser_config, cross_attention_prior_config,
)  # fmt: skip
from vq_hub.models.priors import autoregressive_prior_config, denoiser_config
from vq_hub.text import load_text_tokenizer, train_caption_tokenizer
from vq_hub.text_encoders import (
    TEXT_ENCODER_TYPES, encode_text, load_text_encoder, make_text_encoder, text_length_limit,
    tokenize_for_encoder,
)  # fmt: skip

logger = get_logger(__name__)
ENCODE_BATCH = 256  # captions per pass of a frozen encoder


def add_text_encoder_arguments(parser: argparse.ArgumentParser) -> None:
    text = parser.add_argument_group("text encoder (cross-attention text-to-image priors, with --caption_column)")
    text.add_argument("--text_encoder_name_or_path", help="A pretrained transformers text encoder (folder or Hub id: "
                      "T5 → T5EncoderModel, CLIP → CLIPTextModel, else AutoModel), its tokenizer from the same place "
                      "unless --text_tokenizer_name_or_path; frozen unless --train_text_encoder.")  # fmt: skip
    text.add_argument("--text_encoder_type", choices=TEXT_ENCODER_TYPES, help="Build a small text encoder of this "
                      "type at random (width --hidden_size, --num_heads heads) and train it with the prior; its "
                      "tokenizer is trained on the captions (--text_tokenizer_type) unless "
                      "--text_tokenizer_name_or_path.")  # fmt: skip
    text.add_argument("--text_encoder_layers", type=int, default=2, help="Layers of --text_encoder_type.")
    text.add_argument("--train_text_encoder", action="store_true", help="Train the pretrained encoder too (it then "
                      "runs every step: nothing is precomputed).")  # fmt: skip


def uses_text_encoder(args: argparse.Namespace) -> bool:
    return bool(args.text_encoder_name_or_path or args.text_encoder_type)


class CaptionStates:
    """Every distinct caption of the run, tokenized once (and encoded once by a frozen encoder); the empty caption
    is the last row."""

    def __init__(self, text_encoder, tokenizer, captions: list[str], trained: bool, device):
        self.text_encoder, self.tokenizer, self.trained = text_encoder, tokenizer, trained
        self.index = {caption: row for row, caption in enumerate(dict.fromkeys([*captions, ""]))}
        self.empty_index = self.index[""]
        try:
            self.ids, self.mask = tokenize_for_encoder(tokenizer, list(self.index), text_length_limit(tokenizer,
                                                       text_encoder), name="caption")  # fmt: skip
        except ValueError as error:
            raise SystemExit(f"--caption_column: {error}") from None
        self.states = None
        if not trained:
            text_encoder.requires_grad_(False).eval().to(device)
            with torch.no_grad():
                self.states = torch.cat([
                    encode_text(text_encoder, self.ids[start : start + ENCODE_BATCH],
                                self.mask[start : start + ENCODE_BATCH]).float().cpu()
                    for start in range(0, len(self.ids), ENCODE_BATCH)
                ])  # fmt: skip

    def with_index(self, dataset, column: str):
        """`dataset` with a `caption_index` column (each row's caption's row here)."""
        dataset = dataset.with_format(None).map(
            lambda captions: {CAPTION_INDEX_COLUMN: [self.index[caption] for caption in captions]}, batched=True,
            input_columns=[column], keep_in_memory=True, desc="indexing captions",
        )  # fmt: skip
        set_code_format(dataset)
        return dataset


def prepare_text_encoder(args: argparse.Namespace, info: dict, train_dataset, validation_dataset):
    """`(tokenizer, train, validation)`: the text encoder's tokenizer and the splits with a `caption_index` column;
    `info["caption_states"]` holds the `CaptionStates` the prior is built around."""
    column = args.caption_column
    captions = list(train_dataset.with_format(None)[column])
    if validation_dataset is not None:
        captions += list(validation_dataset.with_format(None)[column])
    if args.text_encoder_name_or_path and args.text_encoder_type:
        raise SystemExit("--text_encoder_name_or_path and --text_encoder_type: give one (a pretrained encoder, or "
                         "one built at random)")  # fmt: skip
    if args.text_encoder_name_or_path:
        text_encoder = load_text_encoder(args.text_encoder_name_or_path)
        tokenizer = load_text_tokenizer(args.text_tokenizer_name_or_path or args.text_encoder_name_or_path)
        trained = args.train_text_encoder
    else:
        if args.text_tokenizer_name_or_path:
            tokenizer = load_text_tokenizer(args.text_tokenizer_name_or_path)
        else:
            tokenizer = train_caption_tokenizer(captions, kind=args.text_tokenizer_type,
                                                vocab_size=args.text_vocab_size, max_length=args.max_text_length)
        limit = min(tokenizer.model_max_length, 1024)
        text_encoder = make_text_encoder(args.text_encoder_type, len(tokenizer), args.hidden_size,
                                         args.text_encoder_layers, args.num_heads, max_length=limit,
                                         pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        trained = True
    if args.max_text_length:
        tokenizer.model_max_length = args.max_text_length
    states = CaptionStates(text_encoder, tokenizer, captions, trained, PartialState().device)
    train_dataset = states.with_index(train_dataset, column)
    if validation_dataset is not None:
        validation_dataset = states.with_index(validation_dataset, column)
    info.update(num_classes=0, caption_states=states)
    logger.info(f"text: {type(text_encoder).__name__} ({'trained' if trained else 'frozen, states precomputed'}), "
                f"{type(tokenizer).__name__} with {len(tokenizer)} tokens, {len(states.index)} distinct captions of "
                f"up to {states.ids.shape[1]} tokens")  # fmt: skip
    return tokenizer, train_dataset, validation_dataset


class TextConditionedPrior(torch.nn.Module):
    """The trained module of a cross-attention run: the prior and, when it trains, the text encoder. A frozen
    encoder stays outside (its states are precomputed), so optimizer, EMA and checkpoints hold the prior only."""

    def __init__(self, prior: torch.nn.Module, caption_states: CaptionStates):
        super().__init__()
        self.prior = prior
        self.text_encoder = caption_states.text_encoder if caption_states.trained else None
        self.frozen = {"text_encoder": caption_states.text_encoder}  # a dict: not registered as a submodule
        self.register_buffer("caption_ids", caption_states.ids, persistent=False)
        self.register_buffer("caption_mask", caption_states.mask, persistent=False)
        self.register_buffer("caption_states", caption_states.states, persistent=False)
        self.empty_index = caption_states.empty_index

    @property
    def config(self):
        return self.prior.config

    @property
    def pipeline_text_encoder(self) -> torch.nn.Module:
        return self.text_encoder if self.text_encoder is not None else self.frozen["text_encoder"]

    def forward(self, input_ids, attention_mask=None, caption_index=None, caption_dropout: float = 0.0):
        """The prior on `input_ids`, cross-attending to the captions of `caption_index` — each replaced by the empty
        caption with probability `caption_dropout` (global RNG: resumable)."""
        if caption_dropout > 0:
            dropped = torch.rand(caption_index.shape, device=caption_index.device) < caption_dropout
            caption_index = torch.where(dropped, self.empty_index, caption_index)
        mask = self.caption_mask[caption_index]
        if self.text_encoder is not None:
            states = self.text_encoder(input_ids=self.caption_ids[caption_index], attention_mask=mask).last_hidden_state
        else:
            states = self.caption_states[caption_index]
        if getattr(self.prior.config, "is_decoder", False):  # a denoiser: bidirectional (models/cross_attention.py)
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            attention_mask = bidirectional_attention_mask(attention_mask, self.prior.config)
        return self.prior(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=states,
                          encoder_attention_mask=mask)  # fmt: skip


def build_cross_attention_prior(args: argparse.Namespace, vqvae, info: dict, auto_class,
                                config_helper) -> TextConditionedPrior:  # fmt: skip
    """`auto_class.from_config` of the cross-attention counterpart of `config_helper` (vq_hub's
    `autoregressive_prior_config` / `denoiser_config`) for the run's text encoder, around its caption states."""
    config_helper = {autoregressive_prior_config: cross_attention_prior_config,
                     denoiser_config: cross_attention_denoiser_config}[config_helper]  # fmt: skip
    if args.config_name_or_path:
        raise SystemExit("--config_name_or_path does not apply with a text encoder: the prior's width is the "
                         "encoder's; give --num_layers / --num_heads")  # fmt: skip
    states = info["caption_states"]
    config = config_helper(vqvae, states.text_encoder.config, model_type=args.model_type,
                           resolution=info["resolution"], num_layers=args.num_layers, num_heads=args.num_heads)
    return TextConditionedPrior(auto_class.from_config(config), states)


def text_inputs(batch: dict, caption_dropout: float) -> dict:
    """What a `TextConditionedPrior` takes beside the tokens: the rows' caption indices and the dropout."""
    if CAPTION_INDEX_COLUMN not in batch:
        return {}
    return {"caption_index": batch[CAPTION_INDEX_COLUMN], "caption_dropout": caption_dropout}

