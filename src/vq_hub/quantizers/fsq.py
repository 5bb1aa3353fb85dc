"""Finite scalar quantization (Mentzer et al., 2023): round each dimension to a few levels, no codebook to learn."""

import math

import torch
from torch import nn

from .base import Quantizer, QuantizerOutput, apply_projection, straight_through


class FSQuantizer(Quantizer):
    r"""
    Bounds each of `len(levels)` dimensions with tanh and rounds it to `levels[i]` values; the implicit codebook is
    every combination, `prod(levels)` codes, and it needs no auxiliary loss.

    Args:
        levels (`list[int]`): Number of levels per dimension, e.g. `[8, 5, 5, 5]` (1,000 codes).
        embedding_dim (`int`):
            Channels of the latents; projected to `len(levels)` dimensions and back when they differ.
    """

    def __init__(self, levels: list[int], embedding_dim: int):
        super().__init__()
        if not levels or any(int(level) < 2 for level in levels):
            raise ValueError(f"`levels` must be a non-empty list of integers >= 2, got {levels}")
        self.levels_list = [int(level) for level in levels]
        self.codebook_size = math.prod(self.levels_list)
        self.embedding_dim = embedding_dim
        num_dims = len(self.levels_list)
        self.project_in = nn.Linear(embedding_dim, num_dims) if embedding_dim != num_dims else nn.Identity()
        self.project_out = nn.Linear(num_dims, embedding_dim) if embedding_dim != num_dims else nn.Identity()

        levels_tensor = torch.tensor(self.levels_list, dtype=torch.long)
        basis = torch.cumprod(torch.tensor([1] + self.levels_list[:-1], dtype=torch.long), dim=0)
        # Derived from `levels`, which lives in the config: not part of the state dict.
        self.register_buffer("levels", levels_tensor, persistent=False)
        self.register_buffer("basis", basis, persistent=False)

    def forward(self, latents: torch.Tensor) -> QuantizerOutput:
        self.check_latents(latents)
        batch, channels, height, width = latents.shape
        vectors = apply_projection(self.project_in, latents.permute(0, 2, 3, 1).reshape(-1, channels)).float()
        bounded = self._bound(vectors)
        rounded = straight_through(bounded.round(), bounded)
        half_width = (self.levels // 2).float()
        codes = self._levels_to_index(rounded.detach() + half_width)
        quantized = apply_projection(self.project_out, rounded / half_width)
        _, batch_perplexity, usage = self.code_statistics(codes)
        zero = torch.zeros((), device=latents.device)
        return QuantizerOutput(
            quantized=quantized.view(batch, height, width, channels).permute(0, 3, 1, 2).to(latents.dtype),
            codes=codes.view(batch, height, width),
            codebook_loss=zero,
            commitment_loss=zero,
            auxiliary_loss=zero,
            perplexity=batch_perplexity,
            codebook_usage=usage,
        )

    @torch.no_grad()
    def latents_to_codes(self, latents: torch.Tensor) -> torch.LongTensor:
        self.check_latents(latents, finite=True)
        batch, channels, height, width = latents.shape
        vectors = apply_projection(self.project_in, latents.permute(0, 2, 3, 1).reshape(-1, channels)).float()
        codes = self._levels_to_index(self._bound(vectors).round() + (self.levels // 2))
        return codes.view(batch, height, width)

    def codes_to_latents(self, codes: torch.LongTensor) -> torch.Tensor:
        self.check_codes(codes)
        batch, height, width = codes.shape
        quantized = apply_projection(self.project_out, self.indices_to_normalized(codes.reshape(-1).long()))
        return quantized.view(batch, height, width, self.embedding_dim).permute(0, 3, 1, 2)

    def indices_to_normalized(self, indices: torch.LongTensor) -> torch.Tensor:
        """Code indices (N,) → per-dimension values (N, len(levels)) in [-1, 1]."""
        level_index = (indices.unsqueeze(-1) // self.basis) % self.levels
        half_width = (self.levels // 2).float()
        return (level_index.float() - half_width) / half_width

    def _bound(self, vectors: torch.Tensor) -> torch.Tensor:
        """Squash each dimension into (-L/2, L/2) so rounding yields exactly L values (even L shifted by ½)."""
        levels = self.levels.float()
        half_range = (levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_range)
        return torch.tanh(vectors + shift) * half_range - offset

    def _levels_to_index(self, level_index: torch.Tensor) -> torch.LongTensor:
        return (level_index.round().long() * self.basis).sum(dim=-1)
