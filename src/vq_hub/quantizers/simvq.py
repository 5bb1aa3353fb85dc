"""SimVQ (Zhu et al., 2024): a frozen random codebook behind one learnable linear map."""

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.checks import check_float, check_int
from .base import Quantizer, QuantizerOutput, apply_projection, straight_through
from .vector import nearest_codes


class SimVQuantizer(Quantizer):
    r"""
    Vector quantization whose codebook is `W(C)`: `C` is a random `(K, d)` matrix drawn once and frozen (a buffer,
    saved with the model), `W` a learnable `d × d` linear map. A plain VQ codebook only moves the rows that are
    chosen, so unchosen rows stay dead; here every gradient step moves `W`, and with it the whole codebook, as one
    space — which is how SimVQ keeps large codebooks in use without k-means init, restarts or EMA (the map is trained
    by gradient; there is no EMA variant).

    Losses as [`~vq_hub.quantizers.VectorQuantizer`]: `codebook_loss = ||sg[z_e] − W(C)_k||²` (its gradient reaches
    only `W`) and `commitment_loss = β·||z_e − sg[W(C)_k]||²`.

    Args:
        num_embeddings (`int`): Codebook size K.
        embedding_dim (`int`): Channels of the latents.
        codebook_dim (`int`, *optional*): Dimension `d` of the codes when smaller than `embedding_dim`, with in/out
            projections. Defaults to `embedding_dim`.
        beta (`float`, defaults to 0.25): Commitment weight β.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, codebook_dim: int | None = None, beta: float = 0.25):
        super().__init__()
        self.codebook_size = check_int(num_embeddings, "num_embeddings", minimum=1)
        self.embedding_dim = check_int(embedding_dim, "embedding_dim", minimum=1)
        self.codebook_dim = check_int(codebook_dim or embedding_dim, "codebook_dim", minimum=1)
        self.beta = check_float(beta, "beta", minimum=0.0)
        dim = self.codebook_dim
        self.project_in = nn.Linear(embedding_dim, dim) if dim != embedding_dim else nn.Identity()
        self.project_out = nn.Linear(dim, embedding_dim) if dim != embedding_dim else nn.Identity()
        # Drawn once, never trained: persistent, so a saved model reloads the same codebook.
        self.register_buffer("frozen_codebook", torch.randn(num_embeddings, dim) * dim**-0.5)
        self.codebook_map = nn.Linear(dim, dim, bias=False)

    @property
    def codebook(self) -> torch.Tensor:
        """The codes used for lookup, `W(C)`, `(K, codebook_dim)` in float32 (differentiable in `W`)."""
        return F.linear(_aligned(self.frozen_codebook.float()), _aligned(self.codebook_map.weight.float()))

    def forward(self, latents: torch.Tensor) -> QuantizerOutput:
        self.check_latents(latents)
        batch, channels, height, width = latents.shape
        with torch.autocast(device_type=latents.device.type, enabled=False):
            vectors = self._to_codebook_space(latents)
            codebook = self.codebook
            codes = nearest_codes(vectors, codebook.detach())
            quantized = F.embedding(codes, codebook)
            _, batch_perplexity, usage = self.code_statistics(codes)
            codebook_loss = F.mse_loss(quantized, vectors.detach())
            commitment_loss = self.beta * F.mse_loss(vectors, quantized.detach())
            quantized = apply_projection(self.project_out, straight_through(quantized, vectors)).float()
        return QuantizerOutput(
            quantized=quantized.view(batch, height, width, channels).permute(0, 3, 1, 2).to(latents.dtype),
            codes=codes.view(batch, height, width),
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
            auxiliary_loss=torch.zeros((), device=latents.device),
            perplexity=batch_perplexity,
            codebook_usage=usage,
        )

    @torch.no_grad()
    def latents_to_codes(self, latents: torch.Tensor) -> torch.LongTensor:
        self.check_latents(latents, finite=True)
        batch, _, height, width = latents.shape
        with torch.autocast(device_type=latents.device.type, enabled=False):
            codes = nearest_codes(self._to_codebook_space(latents), self.codebook)
        return codes.view(batch, height, width)

    def codes_to_latents(self, codes: torch.LongTensor) -> torch.Tensor:
        self.check_codes(codes)
        batch, height, width = codes.shape
        vectors = apply_projection(self.project_out, F.embedding(codes.reshape(-1).long(), self.codebook))
        return vectors.view(batch, height, width, self.embedding_dim).permute(0, 3, 1, 2)

    def _to_codebook_space(self, latents: torch.Tensor) -> torch.Tensor:
        vectors = latents.permute(0, 2, 3, 1).reshape(-1, self.embedding_dim)
        return apply_projection(self.project_in, vectors).float()


def _aligned(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor`, copied when its memory is not 64-byte aligned: CPU matrix kernels take another path (rounding the
    last bit differently) for the unaligned tensors a safetensors file loads into, and a saved model must compute
    the very codebook it was saved with (tokenize → detokenize after `from_pretrained` equals forward)."""
    return tensor.clone() if tensor.data_ptr() % 64 else tensor
