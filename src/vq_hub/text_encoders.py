"""Text encoders for the cross-attention text-to-image pipelines: any transformers encoder (`T5EncoderModel`,
`CLIPTextModel`, `BertModel`, …) loaded by name, or a small one built to be trained from scratch, and prompts turned
into its states.

One rule makes training and sampling agree: a prompt with no tokens (the empty prompt, the unconditional input of
classifier-free guidance) is encoded as a single attended pad token, whatever the tokenizer would wrap around "" —
every encoder then gives it a defined state (a row with nothing attended would be NaN in softmax attention).
"""

import torch
from transformers import AutoConfig, AutoModel, PreTrainedModel, PreTrainedTokenizerBase

from .text import encode_prompts

TEXT_ENCODER_TYPES = ("t5", "clip_text_model", "bert")
# Encoders whose `AutoModel` is an encoder–decoder or a two-tower model: the text encoder is the class named here.
ENCODER_CLASSES = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel",
                   "clip": "CLIPTextModel", "siglip": "SiglipTextModel"}  # fmt: skip
LONGEST_DEFAULT = 512  # a tokenizer that records no usable length (transformers' 1e30 sentinel)


def load_text_encoder(name_or_path: str, **kwargs) -> PreTrainedModel:
    """A pretrained text encoder from a folder or Hub id: `T5EncoderModel` for a T5 checkpoint, `CLIPTextModel` for a
    CLIP one (text tower only), `AutoModel` otherwise (BERT, RoBERTa, …)."""
    import transformers

    config = AutoConfig.from_pretrained(name_or_path, **kwargs)
    name = ENCODER_CLASSES.get(config.model_type)
    model_class = getattr(transformers, name) if name else AutoModel
    return model_class.from_pretrained(name_or_path, **kwargs)


def make_text_encoder(
    model_type: str, vocab_size: int, hidden_size: int = 256, num_layers: int = 2, num_heads: int = 4,
    max_length: int = 77, pad_token_id: int = 0,
) -> PreTrainedModel:  # fmt: skip
    """A randomly initialised text encoder of `model_type` ("t5", "clip_text_model" or "bert") for a tokenizer of
    `vocab_size` tokens and prompts of up to `max_length` tokens — to train from scratch with a prior."""
    import transformers

    if model_type not in TEXT_ENCODER_TYPES:
        raise ValueError(f"`model_type` must be one of {TEXT_ENCODER_TYPES}, got {model_type!r}")
    if model_type == "t5":
        config = transformers.T5Config(vocab_size=vocab_size, d_model=hidden_size, d_kv=hidden_size // num_heads,
                                       d_ff=4 * hidden_size, num_layers=num_layers, num_heads=num_heads,
                                       pad_token_id=pad_token_id, decoder_start_token_id=pad_token_id)  # fmt: skip
        return transformers.T5EncoderModel(config)
    settings = dict(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                    num_attention_heads=num_heads, intermediate_size=4 * hidden_size,
                    max_position_embeddings=max_length, pad_token_id=pad_token_id)  # fmt: skip
    if model_type == "bert":
        return transformers.BertModel(transformers.BertConfig(type_vocab_size=1, **settings), add_pooling_layer=False)
    # CLIP's default BOS/EOS ids are those of its 49,408-token vocabulary; only its pooled output reads them.
    return transformers.CLIPTextModel(transformers.CLIPTextConfig(bos_token_id=pad_token_id, eos_token_id=pad_token_id,
                                                                  **settings))  # fmt: skip


def text_length_limit(tokenizer: PreTrainedTokenizerBase, text_encoder: PreTrainedModel) -> int:
    """The longest prompt in tokens: the tokenizer's `model_max_length`, capped by the encoder's position table."""
    limits = [tokenizer.model_max_length, getattr(text_encoder.config, "max_position_embeddings", None)]
    limits = [limit for limit in limits if isinstance(limit, int) and 0 < limit < 1_000_000]
    return min(limits) if limits else LONGEST_DEFAULT


def tokenize_for_encoder(
    tokenizer: PreTrainedTokenizerBase, prompts: list[str], max_length: int, name: str = "prompt"
) -> tuple[torch.LongTensor, torch.LongTensor]:
    """`(input ids, attention mask)` `(B, T)`, T the longest prompt's tokens: `text.encode_prompts`' checks (too long,
    mostly unknown words) and padding, a prompt with no tokens as one attended pad (module docstring)."""
    ids, mask = encode_prompts(tokenizer, prompts, max_length, name=name,
                               limit="the text encoder's tokenizer's `model_max_length`")  # fmt: skip
    mask[mask.sum(dim=1) == 0, 0] = 1
    length = int(mask.sum(dim=1).max())
    return ids[:, :length], mask[:, :length]


def encode_text(
    text_encoder: PreTrainedModel, input_ids: torch.LongTensor, attention_mask: torch.LongTensor
) -> torch.Tensor:
    """The encoder's last hidden states `(B, T, D)` for tokenized prompts, on the encoder's device."""
    device = text_encoder.device
    output = text_encoder(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device))
    return output.last_hidden_state
