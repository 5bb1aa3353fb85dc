"""The one function that turns a prior's float logits into the integer frequencies the range coder uses.

Encoder and decoder both call `logits_to_frequencies`, so the coder sees the same integers on both sides whenever
the prior's logits are the same floats. Everything after the logits is exact or correctly rounded IEEE arithmetic
in a fixed order (no library `exp`, whose last bit may differ between CPUs, and no float sums, whose order may):

1. logits − row maximum, in float64 (correctly rounded);
2. 2^(x·log2 e) with a fixed polynomial: one correctly rounded operation at a time;
3. scaled to 30-bit integers, then shared out in integer arithmetic so that every code gets at least
   `min_frequency` and each row sums to exactly 2^precision; the rounding remainder goes to the most likely code.

The frequencies approximate the softmax of the logits to about 2^-24, so coding costs the prior's cross-entropy
within a fraction of a percent, and no code is ever unencodable: the least likely one costs at most
`precision − log2(min_frequency)` bits.
"""

import math

import numpy as np
import torch

PRECISION = 24  # constriction's default range coder: probabilities are multiples of 2^-24
MIN_FREQUENCY = 1
_WEIGHT_BITS = 30  # resolution of the relative weights before they are shared out (products stay below 2^63)
_LOG2_E = 1.0 / math.log(2.0)
_LN2 = math.log(2.0)
# Taylor coefficients of 2^f = exp(f·ln 2) on [0, 1): degree 13 leaves a relative error under 2e-13.
_EXP2_COEFFICIENTS = tuple(_LN2**k / math.factorial(k) for k in range(14))


def _exp2_fraction(fraction: np.ndarray) -> np.ndarray:
    """2^f for f in [0, 1), by Horner's rule with one rounding per numpy operation (no fused multiply-add)."""
    result = np.full_like(fraction, _EXP2_COEFFICIENTS[-1])
    for coefficient in reversed(_EXP2_COEFFICIENTS[:-1]):
        result = np.add(np.multiply(result, fraction), coefficient)
    return result


def logits_to_frequencies(
    logits: torch.Tensor | np.ndarray, precision: int = PRECISION, min_frequency: int = MIN_FREQUENCY
) -> np.ndarray:
    """`(B, K)` logits → `(B, K)` int64 frequencies, each ≥ `min_frequency`, each row summing to 2^`precision`.

    The result depends only on the logits' float values (and the two integer settings), never on the machine.
    """
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().to("cpu", torch.float64).numpy()
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"`logits` must be (batch, K) with K ≥ 2 codes, got shape {logits.shape}")
    if not np.isfinite(logits).all():
        raise ValueError("`logits` hold NaN or infinite values: the prior's output cannot be coded")
    num_codes = logits.shape[1]
    if not 1 <= precision <= 32 or not isinstance(precision, int):
        raise ValueError(f"`precision` must be an integer in [1, 32], got {precision!r}")
    free = (1 << precision) - num_codes * min_frequency
    if min_frequency < 1 or free < 1:
        raise ValueError(f"`min_frequency` must be ≥ 1 and leave room in 2^{precision} for {num_codes} codes, "
                         f"got {min_frequency}")  # fmt: skip

    # 2^(x·log2 e) for x = logit − max ≤ 0, split as 2^n · 2^f with n = floor, f in [0, 1): all exact but the
    # multiply by log2 e and the polynomial, which are correctly rounded step by step.
    scaled = np.multiply(logits - logits.max(axis=1, keepdims=True), _LOG2_E)
    scaled = np.maximum(scaled, -1000.0)  # 2^-1000 is 0 at 30-bit resolution anyway; keeps ldexp in range
    whole = np.floor(scaled)
    weights = np.ldexp(_exp2_fraction(scaled - whole), whole.astype(np.int64) + _WEIGHT_BITS)

    # Integers from here on: exact, order-free sums.
    weights = np.floor(weights).astype(np.int64)  # the most likely code has weight ≥ 2^30, others ≥ 0
    totals = weights.sum(axis=1, keepdims=True)
    frequencies = min_frequency + (weights * free) // totals
    remainder = (1 << precision) - frequencies.sum(axis=1)
    frequencies[np.arange(len(frequencies)), weights.argmax(axis=1)] += remainder
    return frequencies
