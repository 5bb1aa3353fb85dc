"""Lookup-free quantization (MAGVIT-v2, Yu et al. 2023; Open-MAGVIT2): one bit per channel, no codebook to search."""

from abc import abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.checks import check_float, check_int
from .base import Quantizer, QuantizerOutput, apply_projection, straight_through
from .entropy import AnnealedWeight, binary_entropy_terms, check_bits


class BinaryQuantizer(Quantizer):
    r"""
    The shared body of the binary quantizers (LFQ, BSQ): latents are projected to `bits` channels, each channel is
    quantized to `±code_scale` by its sign, and the code is the integer whose bit `i` says channel `i` is positive.
    The implicit codebook has `2^bits` codes and is never materialised or searched.

    Losses: `commitment_loss = β·||z − sg[q]||²` (there is no codebook to pull, so `codebook_loss` is zero) and, in
    `auxiliary_loss`, the entropy loss `w·(per-sample entropy − γ·codebook entropy)` of MAGVIT-v2, with the weight `w`
    annealed as [`~vq_hub.quantizers.entropy.AnnealedWeight`] says and the codebook entropy in its factorised
    approximation over groups of `entropy_group_size` bits (exact up to that many bits; see
    `vq_hub.quantizers.entropy`).

    Args:
        num_embeddings (`int`): Codebook size, a power of two: `2^bits`.
        embedding_dim (`int`): Channels of the latents; projected to `bits` and back by linear maps when they differ.
        beta (`float`, defaults to 0.25): Commitment weight β.
        entropy_loss_weight (`float`, defaults to 0.1): Weight `w` of the entropy loss at step 0 (0 turns it off).
        entropy_loss_weight_end (`float`, *optional*): Weight after `entropy_loss_anneal_steps` (default: constant).
        entropy_loss_anneal_steps (`int`, defaults to 0): Training forward passes of the linear anneal.
        codebook_entropy_weight (`float`, defaults to 1.0): γ, the weight of the codebook (batch) entropy.
        entropy_temperature (`float`, *optional*): τ of the soft assignment `∝ exp(−||z − c||² / τ)` the entropies are
            of; the quantizer's own default when None (see subclasses).
        entropy_group_size (`int`, defaults to 8): Bits per group of the codebook entropy (at most 16: a group holds
            a `(N, 2^g)` matrix).
    """

    default_entropy_temperature = 1.0

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        beta: float = 0.25,
        entropy_loss_weight: float = 0.1,
        entropy_loss_weight_end: float | None = None,
        entropy_loss_anneal_steps: int = 0,
        codebook_entropy_weight: float = 1.0,
        entropy_temperature: float | None = None,
        entropy_group_size: int = 8,
    ):
        super().__init__()
        self.bits = check_bits(num_embeddings, "num_embeddings")
        self.codebook_size = num_embeddings
        self.embedding_dim = check_int(embedding_dim, "embedding_dim", minimum=1)
        self.beta = check_float(beta, "beta", minimum=0.0)
        self.codebook_entropy_weight = check_float(codebook_entropy_weight, "codebook_entropy_weight", minimum=0.0)
        temperature = self.default_entropy_temperature if entropy_temperature is None else entropy_temperature
        self.entropy_temperature = check_float(temperature, "entropy_temperature", minimum=0.0, exclusive_minimum=True)
        self.entropy_group_size = check_int(entropy_group_size, "entropy_group_size", minimum=1)
        if self.entropy_group_size > 16:
            raise ValueError(f"`entropy_group_size` must be at most 16 (a group holds N × 2^g probabilities), got "
                             f"{entropy_group_size}")  # fmt: skip
        self.entropy_weight = AnnealedWeight(entropy_loss_weight, entropy_loss_weight_end, entropy_loss_anneal_steps)
        self.project_in = nn.Linear(embedding_dim, self.bits) if embedding_dim != self.bits else nn.Identity()
        self.project_out = nn.Linear(self.bits, embedding_dim) if embedding_dim != self.bits else nn.Identity()
        # Derived from `num_embeddings`, which lives in the config: not part of the state dict.
        self.register_buffer("bit_values", 2 ** torch.arange(self.bits, dtype=torch.long), persistent=False)

    # ----------------------------------------------------------------------------------------------- subclass hooks

    @property
    @abstractmethod
    def code_scale(self) -> float:
        """The magnitude of each quantized channel."""

    def prepare(self, vectors: torch.Tensor) -> torch.Tensor:
        """What is quantized, from the projected float32 vectors `(N, bits)` (BSQ normalises them)."""
        return vectors

    # ----------------------------------------------------------------------------------------------- public API

    def forward(self, latents: torch.Tensor) -> QuantizerOutput:
        self.check_latents(latents)
        batch, channels, height, width = latents.shape
        with torch.autocast(device_type=latents.device.type, enabled=False):
            vectors = self.prepare(self._project(latents))
            positive = vectors > 0
            values = torch.where(positive, self.code_scale, -self.code_scale)
            codes = (positive.long() * self.bit_values).sum(dim=1)
            _, batch_perplexity, usage = self.code_statistics(codes)
            commitment_loss = self.beta * F.mse_loss(vectors, values)
            auxiliary_loss = self.entropy_loss(vectors)
            if self.training:
                self.entropy_weight.advance()
            quantized = apply_projection(self.project_out, straight_through(values, vectors)).float()
        return QuantizerOutput(
            quantized=quantized.view(batch, height, width, channels).permute(0, 3, 1, 2).to(latents.dtype),
            codes=codes.view(batch, height, width),
            codebook_loss=torch.zeros((), device=latents.device),
            commitment_loss=commitment_loss,
            auxiliary_loss=auxiliary_loss,
            perplexity=batch_perplexity,
            codebook_usage=usage,
        )

    def entropy_loss(self, vectors: torch.Tensor) -> torch.Tensor:
        """`w·(per-sample entropy − γ·codebook entropy)` of the (prepared) vectors `(N, bits)`; zero when `w` is."""
        if self.entropy_weight.is_zero:
            return torch.zeros((), device=vectors.device)
        per_sample, codebook = self.entropy_terms(vectors)
        return self.entropy_weight.value() * (per_sample - self.codebook_entropy_weight * codebook)

    def entropy_terms(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(per_sample_entropy, codebook_entropy)` in nats of the soft assignment `∝ exp(−||z − c||² / τ)`: the
        logit of channel `i` being positive is `4·s·z_i / τ` (the distance difference between its two values)."""
        logits = vectors * (4.0 * self.code_scale / self.entropy_temperature)
        return binary_entropy_terms(logits, self.entropy_group_size)

    @torch.no_grad()
    def latents_to_codes(self, latents: torch.Tensor) -> torch.LongTensor:
        self.check_latents(latents, finite=True)
        batch, _, height, width = latents.shape
        with torch.autocast(device_type=latents.device.type, enabled=False):
            vectors = self.prepare(self._project(latents))
            return ((vectors > 0).long() * self.bit_values).sum(dim=1).view(batch, height, width)

    def codes_to_latents(self, codes: torch.LongTensor) -> torch.Tensor:
        self.check_codes(codes)
        batch, height, width = codes.shape
        values = self.codes_to_values(codes.reshape(-1))
        quantized = apply_projection(self.project_out, values)
        return quantized.view(batch, height, width, self.embedding_dim).permute(0, 3, 1, 2)

    def codes_to_bits(self, codes: torch.LongTensor) -> torch.LongTensor:
        """Codes `(...)` → their bits `(..., bits)` as 0/1, bit `i` for channel `i` (the bit planes of a code grid)."""
        return (codes.long().unsqueeze(-1) // self.bit_values) % 2

    def codes_to_values(self, codes: torch.LongTensor) -> torch.Tensor:
        """Codes `(N,)` → the quantized channels `(N, bits)`, each `±code_scale`, float32."""
        return (self.codes_to_bits(codes).float() * 2 - 1) * self.code_scale

    # ----------------------------------------------------------------------------------------------- internals

    def _project(self, latents: torch.Tensor) -> torch.Tensor:
        vectors = latents.permute(0, 2, 3, 1).reshape(-1, self.embedding_dim)
        return apply_projection(self.project_in, vectors).float()


class LookupFreeQuantizer(BinaryQuantizer):
    r"""
    Lookup-free quantization (MAGVIT-v2): each of `bits` channels becomes `+scale` or `−scale` by its sign; the code
    is the integer of the sign bits, so a codebook of 2^18 codes costs nothing to search. The entropy loss (see
    [`BinaryQuantizer`]) is what spreads the codes over the codebook; without it, LFQ tends to use few codes.

    Args:
        scale (`float`, defaults to 1.0): The magnitude of the quantized channels.
        entropy_temperature (`float`, *optional*): τ of the soft assignment; defaults to 0.01 (Open-MAGVIT2's inverse
            temperature of 100, for latents of unit scale).
        Others: as [`BinaryQuantizer`].
    """

    default_entropy_temperature = 0.01

    def __init__(self, num_embeddings: int, embedding_dim: int, scale: float = 1.0, **kwargs):
        super().__init__(num_embeddings, embedding_dim, **kwargs)
        self.scale = check_float(scale, "scale", minimum=0.0, exclusive_minimum=True)

    @property
    def code_scale(self) -> float:
        return self.scale
