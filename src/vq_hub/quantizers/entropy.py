"""The entropy regulariser of binary quantizers (MAGVIT-v2's LFQ, BSQ-ViT) and its annealed weight.

A binary quantizer picks, for each of `d` channels, one of two values ±s; its implicit codebook is all 2^d sign
patterns. The soft assignment `q(k | z) ∝ exp(-||z - c_k||² / τ)` over those codes factorises over channels (the
distance is a sum over channels), so each channel has its own probability `sigmoid(4·s·z_i / τ)` of being +s. That is
what lets the loss avoid the `N × 2^d` matrix of soft assignments:

- the per-sample entropy `E_z[H(q(·|z))]` is the sum of the channels' binary entropies: exact, `O(N·d)`;
- the codebook entropy `H(E_z[q(·|z)])` does not factorise (the batch mean of products is not a product of means), so
  the channels are split into groups of at most `group_size` and the entropies of the groups' marginals are summed:
  `O(N · d/g · 2^g)`. This is the factorised approximation of Open-MAGVIT2 and BSQ-ViT; it is exact when all channels
  fit in one group, and otherwise an upper bound of the joint entropy (it cannot see dependence between groups).

The loss MAGVIT-v2 minimises is `per_sample_entropy − codebook_weight · codebook_entropy`: confident assignments,
spread over the whole codebook.
"""

import math

import torch
from torch import nn

from ..utils.checks import check_float, check_int


def binary_entropy_terms(bit_logits: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`(per_sample_entropy, codebook_entropy)` in nats of soft binary assignments.

    Args:
        bit_logits (`torch.Tensor` `(N, d)`): Logit of each channel being +s, i.e. `4·s·z_i / τ`.
        group_size (`int`): Channels per group of the codebook entropy (see the module docstring).
    """
    bit_logits = bit_logits.float()
    log_plus, log_minus = nn.functional.logsigmoid(bit_logits), nn.functional.logsigmoid(-bit_logits)
    plus, minus = log_plus.exp(), log_minus.exp()  # not 1 − plus: that rounds a tiny probability to zero
    per_sample = -(plus * log_plus + minus * log_minus).sum(dim=1).mean()

    codebook = bit_logits.new_zeros(())
    for first in range(0, bit_logits.shape[1], group_size):
        # The group's joint probabilities, (N, 2^g), built one bit at a time: after bit i, column k holds the
        # probability of the pattern whose bit j (j ≤ i) is bit j of k. ~2·2^g products a row, no exp, no matmul.
        joint = plus.new_ones(plus.shape[0], 1)
        for channel in range(first, min(first + group_size, plus.shape[1])):
            column = slice(channel, channel + 1)
            joint = torch.cat([joint * minus[:, column], joint * plus[:, column]], dim=1)
        average = joint.mean(dim=0)
        codebook = codebook - (average * average.clamp_min(1e-12).log()).sum()
    return per_sample, codebook


class AnnealedWeight(nn.Module):
    """A loss weight that moves linearly from `start` to `end` over `steps` training forward passes, then stays.

    The step counter is a buffer (saved with the model, so a resumed run resumes the schedule) advanced in place on
    the device: reading the weight never syncs with the host. With gradient accumulation a step is one micro-batch.
    """

    def __init__(self, start: float, end: float | None = None, steps: int = 0):
        super().__init__()
        self.start = check_float(start, "entropy_loss_weight", minimum=0.0)
        self.end = self.start if end is None else check_float(end, "entropy_loss_weight_end", minimum=0.0)
        self.steps = check_int(steps, "entropy_loss_anneal_steps", minimum=0)
        self.register_buffer("step", torch.tensor(0, dtype=torch.long))

    @property
    def is_zero(self) -> bool:
        """Whether the weight is zero at every step (then the loss need not be computed at all)."""
        return self.start == 0.0 and self.end == 0.0

    def value(self) -> torch.Tensor:
        """The weight at the current step, a 0-d float32 tensor on the counter's device (`start + (end − start) ·
        min(step / steps, 1)`)."""
        if self.steps == 0 or self.start == self.end:  # constant (no schedule: `end` from the start)
            return torch.full((), self.end, device=self.step.device)
        progress = (self.step.float() / self.steps).clamp(max=1.0)
        return self.start + (self.end - self.start) * progress

    @torch.no_grad()
    def advance(self) -> None:
        self.step += 1

    def extra_repr(self) -> str:
        return f"start={self.start}, end={self.end}, steps={self.steps}"


def check_bits(codebook_size: int, argument: str = "num_vq_embeddings", maximum_bits: int = 24) -> int:
    """The number of bits of a binary codebook of `codebook_size` codes (a power of two, 2 to 2^maximum_bits).

    The cap keeps the per-batch code histogram (a float per code, reduced across processes) and a prior's vocabulary
    affordable: 2^24 codes are 64 MiB of counts.
    """
    codebook_size = check_int(codebook_size, argument, minimum=2)
    bits = int(math.log2(codebook_size))
    if 2**bits != codebook_size or bits > maximum_bits:
        raise ValueError(
            f"`{argument}` must be a power of two from 2 to 2^{maximum_bits} for a binary quantizer (one bit per "
            f"channel), got {codebook_size}"
        )
    return bits
