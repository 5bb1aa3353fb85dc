"""Residual vector quantization (RQ-VAE, Lee et al. 2022): `depth` codes per position, each quantizing what the
previous ones left."""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..metrics import code_counts, codebook_usage, perplexity
from ..utils.checks import check_int
from ..utils.distributed import is_distributed
from .base import Quantizer, QuantizerOutput, _describe
from .vector import VectorQuantizer


@dataclass
class ResidualQuantizerOutput(QuantizerOutput):
    """
    [`QuantizerOutput`] of a [`ResidualQuantizer`]: `codes` are `(batch_size, depth, height, width)`, the losses are
    summed over depths, `perplexity` and `codebook_usage` are the overall figures (see the class), and:

    Args:
        depth_perplexity (`torch.Tensor` of shape `(depth,)`): Each depth's perplexity, over the codebook it uses.
        depth_codebook_usage (`torch.Tensor` of shape `(depth,)`): Each depth's fraction of its codebook used.
    """

    depth_perplexity: torch.Tensor | None = None
    depth_codebook_usage: torch.Tensor | None = None


class ResidualQuantizer(Quantizer):
    r"""
    Residual quantization: depth 0 quantizes the latent `z`, depth `d` quantizes the residual
    `r_d = z − sg[q_0 + … + q_{d−1}]`, and the quantized latent is `q_0 + … + q_{depth−1}`. Each depth is a
    [`~vq_hub.quantizers.VectorQuantizer`] with all of its options (EMA, k-means init, dead-code restarts, l2 and
    low-dimensional codes); `shared_codebook=True` uses one instance (one codebook, one pair of projections) at every
    depth, as RQ-VAE does, otherwise each depth has its own.

    Codes are `(B, depth, h, w)`: `codes[:, d]` is depth `d`'s code, an index into its codebook.

    Losses: each depth's `codebook_loss` and `commitment_loss` are its vector quantizer's terms on its own residual,
    and the output's are their **sums over depths**. Since `r_d` keeps its gradient to `z` (only the earlier codes
    are detached), depth `d`'s commitment term pulls `z` towards `q_0 + … + q_d`: the partial-sum commitment of
    RQ-VAE, summed rather than averaged. The quantized output is the sum of the depths' straight-through outputs
    (each depth's projections learn from the reconstruction); with identity projections the gradient reaching `z` is
    therefore `depth ×` the output's gradient, as in vector-quantize-pytorch's `ResidualVQ`.

    Statistics: `depth_perplexity` and `depth_codebook_usage` hold each depth's figures (each depth's histogram over
    the codebook it uses); `perplexity` and `codebook_usage` are their mean with per-depth codebooks, and the figures
    of the histogram of all depths' codes together with a shared codebook. All are reduced over processes while
    training in parallel.

    With a shared codebook every depth's forward pass updates it in turn while training: its EMA state decays once
    per depth per step, k-means initialises it on depth 0's latents, and restarts are decided at each depth.

    Args:
        num_embeddings (`int`): Codes per codebook K.
        embedding_dim (`int`): Channels of the latents.
        depth (`int`, defaults to 2): Codes per position (≥ 1).
        shared_codebook (`bool`, defaults to `False`): One codebook for all depths.
        make_quantizer (`Callable[[], VectorQuantizer]`, *optional*): Builds one depth's quantizer (called once when
            shared, else once per depth); default: `VectorQuantizer(num_embeddings, embedding_dim, **kwargs)`.
        **kwargs: The [`~vq_hub.quantizers.VectorQuantizer`] options of every depth, without `make_quantizer`.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        depth: int = 2,
        shared_codebook: bool = False,
        make_quantizer: Callable[[], VectorQuantizer] | None = None,
        **kwargs,
    ):
        super().__init__()
        self.codebook_size = check_int(num_embeddings, "num_embeddings", minimum=1)
        self.embedding_dim = check_int(embedding_dim, "embedding_dim", minimum=1)
        self.depth = check_int(depth, "depth", minimum=1)
        if not isinstance(shared_codebook, bool):
            raise TypeError(f"`shared_codebook` must be a bool, got {shared_codebook!r}")
        self.shared_codebook = shared_codebook
        if make_quantizer is not None and kwargs:
            raise ValueError("give either `make_quantizer` or the vector quantizer's options, not both")
        if make_quantizer is None:
            def make_quantizer():
                return VectorQuantizer(num_embeddings, embedding_dim, **kwargs)
        count = 1 if shared_codebook else self.depth
        self.depth_quantizers = nn.ModuleList(make_quantizer() for _ in range(count))
        for quantizer in self.depth_quantizers:
            if not isinstance(quantizer, VectorQuantizer):
                raise TypeError(f"each depth must be a VectorQuantizer, got {type(quantizer).__name__}")
            if (quantizer.codebook_size, quantizer.embedding_dim) != (self.codebook_size, self.embedding_dim):
                raise ValueError(
                    f"each depth's quantizer must have {self.codebook_size} codes of {self.embedding_dim} channels, "
                    f"got {quantizer.codebook_size} of {quantizer.embedding_dim}"
                )

    # ----------------------------------------------------------------------------------------------- properties

    @property
    def num_codebooks(self) -> int:
        """1 with a shared codebook, else `depth`."""
        return len(self.depth_quantizers)

    def quantizer_at(self, depth: int) -> VectorQuantizer:
        """The vector quantizer of depth `depth` (the one shared instance with a shared codebook)."""
        return self.depth_quantizers[0 if self.shared_codebook else depth]

    @property
    def codebooks(self) -> torch.Tensor:
        """Each codebook's lookup codes, `(num_codebooks, K, codebook_dim)`."""
        return torch.stack([quantizer.codebook for quantizer in self.depth_quantizers])

    @property
    def num_restarts(self) -> torch.Tensor:
        """Dead-code restarts of all codebooks together."""
        return sum(quantizer.num_restarts for quantizer in self.depth_quantizers)

    # ----------------------------------------------------------------------------------------------- public API

    def forward(self, latents: torch.Tensor) -> ResidualQuantizerOutput:
        self.check_latents(latents)
        with torch.autocast(device_type=latents.device.type, enabled=False):
            residual, quantized, outputs = latents.float(), None, []
            for depth in range(self.depth):
                output = self.quantizer_at(depth)(residual)
                outputs.append(output)
                value = output.quantized.float()
                quantized = value if quantized is None else quantized + value
                residual = residual - value.detach()
            codes = torch.stack([output.codes for output in outputs], dim=1)
            depth_perplexity = torch.stack([output.perplexity for output in outputs])
            depth_usage = torch.stack([output.codebook_usage for output in outputs])
            if self.shared_codebook and self.depth > 1:
                counts = code_counts(codes, self.codebook_size, sync=self.training and is_distributed())
                overall_perplexity, overall_usage = perplexity(counts), codebook_usage(counts)
            else:
                overall_perplexity, overall_usage = depth_perplexity.mean(), depth_usage.mean()
            return ResidualQuantizerOutput(
                quantized=quantized.to(latents.dtype),
                codes=codes,
                codebook_loss=sum(output.codebook_loss for output in outputs),
                commitment_loss=sum(output.commitment_loss for output in outputs),
                auxiliary_loss=sum(output.auxiliary_loss for output in outputs),
                perplexity=overall_perplexity,
                codebook_usage=overall_usage,
                depth_perplexity=depth_perplexity,
                depth_codebook_usage=depth_usage,
            )

    @torch.no_grad()
    def latents_to_codes(self, latents: torch.Tensor) -> torch.LongTensor:
        self.check_latents(latents, finite=True)
        with torch.autocast(device_type=latents.device.type, enabled=False):
            residual = latents.float()
            codes = []
            for depth in range(self.depth):
                quantizer = self.quantizer_at(depth)
                depth_codes = quantizer.latents_to_codes(residual)
                residual = residual - quantizer.codes_to_latents(depth_codes).float()
                codes.append(depth_codes)
            return torch.stack(codes, dim=1)

    def codes_to_latents(self, codes: torch.LongTensor) -> torch.Tensor:
        """The quantized latents `(B, C, h, w)` of codes `(B, depth, h, w)`: the sum of each depth's code, in the
        order `forward` sums them (so the two agree bit for bit). Float32."""
        return self.partial_codes_to_latents(codes, self.depth)

    def partial_codes_to_latents(self, codes: torch.LongTensor, depths: int) -> torch.Tensor:
        """The latents of the first `depths` depths of codes `(B, depth, h, w)`: the coarse-to-fine reconstructions
        of RQ-VAE (`depths = depth` is `codes_to_latents`)."""
        self.check_codes(codes)
        depths = check_int(depths, "depths", minimum=1)
        if depths > self.depth:
            raise ValueError(f"`depths` must be at most the quantizer's depth {self.depth}, got {depths}")
        quantized = self.quantizer_at(0).codes_to_latents(codes[:, 0]).float()
        for depth in range(1, depths):
            quantized = quantized + self.quantizer_at(depth).codes_to_latents(codes[:, depth]).float()
        return quantized

    def check_codes(self, codes: torch.Tensor) -> None:
        if not isinstance(codes, torch.Tensor):
            raise TypeError(
                f"`codes` must be an integer torch.Tensor (batch, depth, height, width), got {_describe(codes)}"
            )
        if codes.ndim != 4 or codes.numel() == 0 or codes.shape[1] != self.depth:
            raise ValueError(f"`codes` of a residual quantizer of depth {self.depth} must be a non-empty 4D tensor "
                             f"(batch, {self.depth}, height, width), got {_describe(codes)}")  # fmt: skip
        if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
            raise TypeError(f"`codes` must be an integer tensor (e.g. torch.long), got dtype {codes.dtype}")
        if int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size:
            raise ValueError(
                f"`codes` must lie in [0, {self.codebook_size - 1}] for a codebook of {self.codebook_size} codes, "
                f"got values in [{int(codes.min())}, {int(codes.max())}]"
            )

    def extra_repr(self) -> str:
        return f"depth={self.depth}, shared_codebook={self.shared_codebook}"
