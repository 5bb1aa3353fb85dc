"""Gumbel-softmax quantization (DALL-E dVAE, taming-transformers' GumbelQuantize)."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.checks import check_float
from .base import Quantizer, QuantizerOutput


class GumbelQuantizer(Quantizer):
    r"""
    Predicts logits over the K codes at every position and mixes codes with a Gumbel-softmax sample while training;
    at evaluation the most likely code is taken (hard codes).

    Args:
        num_embeddings (`int`): Codebook size K.
        embedding_dim (`int`): Channels of the latents (and of the codes).
        temperature (`float`, defaults to 1.0):
            Gumbel-softmax temperature; an attribute, so training scripts can anneal it.
        kl_weight (`float`, defaults to 5e-4):
            Weight of `KL(q(z|x) || uniform)`, which keeps the posterior from collapsing onto few codes.
        straight_through (`bool`): Use hard one-hot samples with soft gradients while training.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        temperature: float = 1.0,
        kl_weight: float = 5e-4,
        straight_through: bool = False,
    ):
        super().__init__()
        self.codebook_size = num_embeddings
        self.embedding_dim = embedding_dim
        self.temperature = check_float(temperature, "temperature", minimum=0.0, exclusive_minimum=True)
        self.kl_weight = kl_weight
        self.straight_through = straight_through
        self.to_logits = nn.Conv2d(embedding_dim, num_embeddings, kernel_size=1)
        self.embedding = nn.Embedding(num_embeddings, embedding_dim)

    def forward(self, latents: torch.Tensor) -> QuantizerOutput:
        self.check_latents(latents)
        logits = self.to_logits(latents).float()
        if self.training:
            # An attribute, so a script can anneal it: checked where it is used (0 would divide the logits by zero).
            check_float(self.temperature, "temperature", minimum=0.0, exclusive_minimum=True)
            weights = F.gumbel_softmax(logits, tau=self.temperature, hard=self.straight_through, dim=1)
            codes = weights.argmax(dim=1)
        else:
            codes = logits.argmax(dim=1)
            weights = F.one_hot(codes, self.codebook_size).permute(0, 3, 1, 2).float()
        quantized = torch.einsum("bkhw,kd->bdhw", weights, self.embedding.weight.float())

        log_probs = F.log_softmax(logits, dim=1)
        kl_to_uniform = (log_probs.exp() * (log_probs + math.log(self.codebook_size))).sum(dim=1).mean()
        _, batch_perplexity, usage = self.code_statistics(codes)
        zero = torch.zeros((), device=latents.device)
        return QuantizerOutput(
            quantized=quantized.to(latents.dtype),
            codes=codes,
            codebook_loss=zero,
            commitment_loss=zero,
            auxiliary_loss=self.kl_weight * kl_to_uniform,
            perplexity=batch_perplexity,
            codebook_usage=usage,
        )

    @torch.no_grad()
    def latents_to_codes(self, latents: torch.Tensor) -> torch.LongTensor:
        self.check_latents(latents, finite=True)
        return self.to_logits(latents).argmax(dim=1)

    def codes_to_latents(self, codes: torch.LongTensor) -> torch.Tensor:
        self.check_codes(codes)
        return self.embedding(codes.long()).permute(0, 3, 1, 2)
