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

import math
from collections.abc import Callable

import constriction
import numpy as np
import torch
from tqdm.auto import tqdm

from .frequencies import logits_to_frequencies

_CATEGORICAL = constriction.stream.model.Categorical(perfect=False)
# A range coder with a 64-bit state leaves at most its state's worth of bits unwritten: a stream of W 32-bit words
# holds at most 32·W + 64 bits of information (−log2 of the coded probabilities). The margin covers the flush.
SLACK_BITS = 128
MAX_BATCH_SIZE = 1024  # rows the prior runs at once: a file's batch size is bounded before anything is allocated


class PayloadError(ValueError):
    """The stream cannot hold what the header says or what was decoded: damaged, crafted, or other floats."""


def capacity_bits(num_words: int) -> float:
    """The most information (bits) a stream of `num_words` 32-bit words can hold."""
    return 32.0 * num_words + SLACK_BITS


def min_code_bits(codebook_size: int, precision: int, min_frequency: int) -> float:
    """The least any code can cost: every other code keeps `min_frequency`, so the likeliest possible code has
    frequency 2^precision − (K − 1)·min_frequency (a hair under the exact value, so the bound stays safe)."""
    share = (codebook_size - 1) * min_frequency / 2.0**precision
    return -math.log1p(-share) / math.log(2.0) * (1 - 1e-9)


def min_label_bits(num_classes: int) -> float:
    """The least a label costs under constriction's uniform model over C + 1 symbols (its fixed-point probabilities
    may round a symbol up: bound by a slightly larger one)."""
    return math.log2(2.0**24 / (2**24 // (num_classes + 1) + 2))


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
    step_input, attention_mask = pipe.vocabulary.start_tokens(conditions.to(device))  # a prompt prior: the empty one
    # The pipeline's own dynamic cache (a cross-attention prior's keeps the text's keys and values after the first
    # code) and its unconditional inputs (a text encoder's: the empty prompt's states).
    cache = pipe.make_cache(len(conditions), step_input.shape[1] + num_codes, static=False)
    prior_inputs = pipe.empty_prompt_inputs(len(conditions))
    codes = []
    for position in range(num_codes):
        logits = pipe.next_code_logits(step_input, cache, attention_mask, codebook_size, **prior_inputs)
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
    """The stream's uint32 words → `((N, n) codes, (N,) labels or None, whether the stream was used up exactly)`.

    Raises `PayloadError` as soon as the information decoded exceeds what the words can hold (a legitimate stream
    never does), so a damaged or crafted payload stops early instead of running the prior over invented images.
    The caller bounds `num_images` and `batch_size` by the payload first (`check_counts`)."""
    vocabulary = pipe.vocabulary
    decoder = constriction.stream.queue.RangeDecoder(words)
    budget = capacity_bits(len(words))
    spent = 0.0
    labels = None
    if labels_coded:
        symbols = decoder.decode(_label_model(vocabulary.num_classes), num_images)
        labels = torch.from_numpy(symbols.astype(np.int64)) - 1
        spent = num_images * min_label_bits(vocabulary.num_classes)
    batches = []
    with tqdm(total=num_images, unit="image", desc="decompress", disable=not progress) as bar:
        for start in range(0, num_images, batch_size):
            count = min(batch_size, num_images - start)
            conditions = vocabulary.condition_tokens(None if labels is None else labels[start : start + count], count)

            def read_codes(position: int, frequencies: np.ndarray) -> torch.LongTensor:
                nonlocal spent
                symbols = decoder.decode(_CATEGORICAL, _model_parameters(frequencies))
                chosen = frequencies[np.arange(len(symbols)), symbols]
                spent += float(np.sum(precision - np.log2(chosen)))
                if spent > budget:
                    raise PayloadError(f"the payload decodes to more information ({spent:.0f} bits by image "
                                       f"{start + 1}) than its {len(words)} words can hold ({budget:.0f} bits)")  # fmt: skip
                return torch.from_numpy(symbols.astype(np.int64))

            batches.append(_run_prior(pipe, conditions, num_codes, read_codes, precision, min_frequency))
            bar.update(len(batches[-1]))
    codes = torch.cat(batches) if batches else torch.empty(0, num_codes, dtype=torch.long)
    return codes, labels, decoder.maybe_exhausted()


def check_counts(num_images: int, num_codes: int, batch_size: int, num_classes: int, labels_coded: bool,
                 codebook_size: int, precision: int, min_frequency: int, num_words: int) -> None:  # fmt: skip
    """Refuse (`PayloadError`) counts the payload cannot hold, before anything is allocated or the prior runs:
    each label costs at least `min_label_bits`, each code at least `min_code_bits`."""
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise PayloadError(f"its batch size {batch_size} is outside [1, {MAX_BATCH_SIZE}]")
    budget = capacity_bits(num_words)
    label_bits = num_images * min_label_bits(num_classes) if labels_coded else 0.0
    code_bits = num_images * num_codes * min_code_bits(codebook_size, precision, min_frequency)
    if label_bits + code_bits > budget:
        raise PayloadError(f"its header says {num_images} images ({num_images * num_codes} codes), which need at least "
                           f"{label_bits + code_bits:.0f} bits; its {num_words}-word payload holds at most "
                           f"{budget:.0f}")  # fmt: skip
