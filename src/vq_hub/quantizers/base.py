"""What every quantizer returns and promises, so the tokenizer can swap one for another by config."""

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from diffusers.utils import BaseOutput
from torch import nn

from ..metrics import code_counts, codebook_usage, perplexity
from ..utils.distributed import is_distributed


@dataclass
class QuantizerOutput(BaseOutput):
    """
    Output of a quantizer's forward pass.

    Args:
        quantized (`torch.Tensor` of shape `(batch_size, channels, height, width)`):
            The quantized latents; gradients pass straight through to the input.
        codes (`torch.LongTensor` of shape `(batch_size, height, width)`):
            The index of the code chosen at each position.
        codebook_loss (`torch.Tensor`):
            `||sg[z_e] - z_q||²`, pulling codes towards encoder outputs (zero for EMA codebooks, FSQ, Gumbel, LFQ, BSQ).
        commitment_loss (`torch.Tensor`):
            `β·||z_e - sg[z_q]||²`, keeping encoder outputs near their codes (zero for FSQ and Gumbel).
        auxiliary_loss (`torch.Tensor`):
            A quantizer-specific regulariser: the weighted KL-to-uniform term of Gumbel quantization, the (annealed)
            entropy loss of LFQ and BSQ, else zero.
        perplexity (`torch.Tensor`):
            exp(entropy) of the batch's code histogram (summed over processes while training in parallel).
        codebook_usage (`torch.Tensor`):
            Fraction of codes used at least once in the batch (same reduction as `perplexity`).
    """

    quantized: torch.Tensor | None = None
    codes: torch.LongTensor | None = None
    codebook_loss: torch.Tensor | None = None
    commitment_loss: torch.Tensor | None = None
    auxiliary_loss: torch.Tensor | None = None
    perplexity: torch.Tensor | None = None
    codebook_usage: torch.Tensor | None = None

    @property
    def loss(self) -> torch.Tensor:
        """The sum of the quantizer's loss terms, ready to add to a reconstruction loss."""
        return self.codebook_loss + self.commitment_loss + self.auxiliary_loss


class Quantizer(nn.Module, ABC):
    """Base class: maps latents `(B, C, H, W)` to codes `(B, H, W)` and back."""

    codebook_size: int
    embedding_dim: int

    @abstractmethod
    def forward(self, latents: torch.Tensor) -> QuantizerOutput:
        """Quantize latents (and, while training, update codebook state)."""

    @abstractmethod
    def latents_to_codes(self, latents: torch.Tensor) -> torch.LongTensor:
        """The codes `forward` would choose, with no side effect on any state."""

    @abstractmethod
    def codes_to_latents(self, codes: torch.LongTensor) -> torch.Tensor:
        """The quantized latents `(B, C, H, W)` of codes `(B, H, W)`."""

    def check_latents(self, latents: torch.Tensor, finite: bool = False) -> None:
        """Shape and channels; with `finite`, also no NaN/inf (a sync: done on the inference path only, where a NaN
        latent would otherwise silently become code 0)."""
        if not isinstance(latents, torch.Tensor):
            raise TypeError(f"`latents` must be a torch.Tensor, got {_describe(latents)}")
        if latents.ndim != 4 or latents.numel() == 0:
            raise ValueError(f"`latents` must be a non-empty 4D tensor (batch, channels, height, width), got "
                             f"{_describe(latents)}")  # fmt: skip
        if latents.shape[1] != self.embedding_dim:
            raise ValueError(
                f"`latents` must have {self.embedding_dim} channels for this quantizer, got {latents.shape[1]}"
            )
        if not latents.dtype.is_floating_point:
            raise TypeError(f"`latents` must be floating point, got {latents.dtype} (codes go to `codes_to_latents`)")
        if finite and not bool(torch.isfinite(latents).all()):
            raise ValueError("`latents` hold NaN or infinite values: no code is nearest to them")

    @property
    def code_axes(self) -> tuple[str, ...]:
        """The axes of this quantizer's codes, as errors name them (a residual quantizer's include its depth)."""
        return ("batch", "height", "width")

    def check_codes(self, codes: torch.Tensor) -> None:
        axes = self.code_axes
        shape = f"({', '.join(axes)})"
        if not isinstance(codes, torch.Tensor):
            raise TypeError(f"`codes` must be an integer torch.Tensor {shape}, got {_describe(codes)}")
        fixed = [(axis, int(size)) for axis, size in enumerate(axes) if size.isdigit()]  # e.g. the depth
        if codes.ndim != len(axes) or codes.numel() == 0 or any(codes.shape[axis] != size for axis, size in fixed):
            raise ValueError(f"`codes` must be a non-empty {len(axes)}D tensor {shape}, got {_describe(codes)}")
        if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
            raise TypeError(f"`codes` must be an integer tensor (e.g. torch.long), got dtype {codes.dtype}")
        if int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size:
            raise ValueError(
                f"`codes` must lie in [0, {self.codebook_size - 1}] for a codebook of {self.codebook_size} codes, "
                f"got values in [{int(codes.min())}, {int(codes.max())}]"
            )

    def code_statistics(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return `(counts, perplexity, usage)` of `codes`, reduced over processes while training in parallel."""
        counts = code_counts(codes, self.codebook_size, sync=self.training and is_distributed())
        return counts, perplexity(counts), codebook_usage(counts)


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"an object of type {type(value).__name__}"


def straight_through(forward_value: torch.Tensor, gradient_target: torch.Tensor) -> torch.Tensor:
    """`forward_value` in the forward pass, identity gradient to `gradient_target` in the backward pass.

    Written as `sg[q] + (z - sg[z])` rather than the usual `z + sg[q - z]`, so the forward value is exactly `q`
    (not `q` up to rounding): tokenize→detokenize then matches `forward`'s reconstruction bit for bit.
    """
    return forward_value.detach() + (gradient_target - gradient_target.detach())


def apply_projection(layer: nn.Module, vectors: torch.Tensor) -> torch.Tensor:
    """Run an optional in/out projection in its own weights' dtype (a model cast to bf16 keeps bf16 projections)."""
    if isinstance(layer, nn.Linear):
        return layer(vectors.to(layer.weight.dtype))
    return vectors
