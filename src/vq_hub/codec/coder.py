"""Range coding of code grids with an autoregressive prior.

The prior runs over the images in batches of `batch_size` (the last one smaller), one code position at a time with
its KV cache: `[condition token]`, then each code. Encoder and decoder go through the same function,
`_run_prior`, which differs between them only in who picks the next codes (the encoder takes the known ones, the
decoder reads them from the stream). So both sides compute the same floats in the same layout: a teacher-forced
pass over whole sequences would give slightly different floats than stepping, and the decoder can only step.

One range-coder stream holds, in order: the class labels (if coded, uniformly over {-1, 0, …, C−1}), then every
batch, position by position, the batch's codes at that position. The coder is constriction's `RangeEncoder` with
categorical models built from `logits_to_frequencies` (exactly those integers: see `_model_parameters`).
"""

from collections.abc import Callable

import constriction
import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from .frequencies import logits_to_frequencies

_CATEGORICAL = constriction.stream.model.Categorical(perfect=False)


def _model_parameters(frequencies: np.ndarray) -> np.ndarray:
    """constriction's categorical model gives symbol i the probability (1 + ⌊cumulative⌋ differences) / 2^24 of
    the weights it is handed, scaled to sum to 2^24 − K; handing it `frequencies − 1` (which sum to exactly that)
    makes the scale exactly 1, so its fixed-point model equals our integer frequencies."""
    return (frequencies - 1).astype(np.float64)


def _label_model(num_classes: int):
    return constriction.stream.model.Uniform(num_classes + 1)  # symbol = label + 1; 0 means "no label"


@torch.no_grad()
def _run_prior(pipe, conditions: torch.LongTensor, num_codes: int, pick: Callable, precision: int,
               min_frequency: int) -> torch.LongTensor:  # fmt: skip
    """Step the prior through one batch: at each position, the frequencies of every code for every row go to
    `pick(position, frequencies) -> (B,) codes`, whose answer is fed back. Returns the `(B, num_codes)` codes."""
    codebook_size = pipe.vocabulary.codebook_size
    device = pipe._execution_device
    cache = DynamicCache(config=pipe.prior.config)
    step_input, attention_mask = pipe.vocabulary.start_tokens(conditions.to(device))  # a prompt prior: the empty one
    codes = []
    for position in range(num_codes):
        logits = pipe.next_code_logits(step_input, cache, attention_mask, codebook_size)
        next_codes = pick(position, logits_to_frequencies(logits, precision, min_frequency))
        codes.append(next_codes)
        step_input = next_codes.to(device)[:, None]
        attention_mask = torch.cat([attention_mask, torch.ones_like(step_input)], dim=1)
    return torch.stack(codes, dim=1)


def encode(pipe, codes: torch.LongTensor, labels: torch.LongTensor | None, batch_size: int, precision: int,
           min_frequency: int, progress: bool = False) -> np.ndarray:  # fmt: skip
    """`(N, n)` codes (and `(N,)` labels, -1 = none, or `None` for unconditional coding) → the stream's uint32
    words."""
    vocabulary = pipe.vocabulary
    encoder = constriction.stream.queue.RangeEncoder()
    if labels is not None:
        encoder.encode((labels + 1).numpy().astype(np.int32), _label_model(vocabulary.num_classes))
    conditions = vocabulary.condition_tokens(labels, len(codes))
    with tqdm(total=len(codes), unit="image", desc="compress", disable=not progress) as bar:
        for start in range(0, len(codes), batch_size):
            batch = codes[start : start + batch_size]

            def code_known(position: int, frequencies: np.ndarray, batch=batch) -> torch.LongTensor:
                known = batch[:, position]
                encoder.encode(known.numpy().astype(np.int32), _CATEGORICAL, _model_parameters(frequencies))
                return known

            _run_prior(pipe, conditions[start : start + batch_size], codes.shape[1], code_known, precision,
                       min_frequency)  # fmt: skip
            bar.update(len(batch))
    return encoder.get_compressed()


def decode(pipe, words: np.ndarray, num_images: int, num_codes: int, labels_coded: bool, batch_size: int,
           precision: int, min_frequency: int, progress: bool = False):  # fmt: skip
    """The stream's uint32 words → `((N, n) codes, (N,) labels or None, whether the stream was used up exactly)`."""
    vocabulary = pipe.vocabulary
    decoder = constriction.stream.queue.RangeDecoder(words)
    labels = None
    if labels_coded:
        symbols = decoder.decode(_label_model(vocabulary.num_classes), num_images)
        labels = torch.from_numpy(symbols.astype(np.int64)) - 1
    conditions = vocabulary.condition_tokens(labels, num_images)
    batches = []
    with tqdm(total=num_images, unit="image", desc="decompress", disable=not progress) as bar:
        for start in range(0, num_images, batch_size):

            def read_codes(position: int, frequencies: np.ndarray) -> torch.LongTensor:
                symbols = decoder.decode(_CATEGORICAL, _model_parameters(frequencies))
                return torch.from_numpy(symbols.astype(np.int64))

            batches.append(_run_prior(pipe, conditions[start : start + batch_size], num_codes, read_codes, precision,
                                      min_frequency))  # fmt: skip
            bar.update(len(batches[-1]))
    codes = torch.cat(batches) if batches else torch.empty(0, num_codes, dtype=torch.long)
    return codes, labels, decoder.maybe_exhausted()
