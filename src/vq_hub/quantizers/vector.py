"""Nearest-neighbour vector quantization (VQ-VAE) with the codebook tricks that keep it healthy."""

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.distributed import all_reduce_sum, broadcast_from_main, is_distributed, is_main_process
from .base import Quantizer, QuantizerOutput, apply_projection, straight_through

# Upper bound on the number of float32 distances held at once (64 MiB); see `nearest_codes`.
DEFAULT_DISTANCE_CHUNK_ELEMENTS = 2**24


@torch.no_grad()
def nearest_codes(
    vectors: torch.Tensor, codebook: torch.Tensor, max_chunk_elements: int = DEFAULT_DISTANCE_CHUNK_ELEMENTS
) -> torch.LongTensor:
    """Index of the nearest codebook row (squared L2) for every row of `vectors`, computed in float32.

    `argmin_k ||z - e_k||² = argmin_k (||e_k||² - 2 z·e_k)`, one fused `addmm` per chunk of rows. Chunking bounds
    memory to `max_chunk_elements` distances, so K = 65,536 codes never materialise an N×K matrix.
    """
    vectors = vectors.float()
    codebook = codebook.float()
    codebook_sq_norms = codebook.pow(2).sum(dim=1)
    rows_per_chunk = max(1, max_chunk_elements // codebook.shape[0])
    codes = torch.empty(vectors.shape[0], dtype=torch.long, device=vectors.device)
    for start in range(0, vectors.shape[0], rows_per_chunk):
        chunk = vectors[start : start + rows_per_chunk]
        distances = torch.addmm(codebook_sq_norms, chunk, codebook.t(), alpha=-2.0)
        codes[start : start + rows_per_chunk] = distances.argmin(dim=1)
    return codes


@torch.no_grad()
def kmeans(
    vectors: torch.Tensor, num_clusters: int, num_iters: int = 10, spherical: bool = False
) -> torch.Tensor:
    """Lloyd's k-means on `vectors` (N, D) → centroids (num_clusters, D); spherical keeps centroids unit-norm.

    Centroids start at randomly drawn data points (with replacement when N < num_clusters); a cluster that loses
    all its points keeps its previous centroid.
    """
    vectors = vectors.float()
    num_vectors = vectors.shape[0]
    if num_vectors >= num_clusters:
        start = torch.randperm(num_vectors, device=vectors.device)[:num_clusters]
    else:
        start = torch.randint(0, num_vectors, (num_clusters,), device=vectors.device)
    centroids = vectors[start].clone()
    for _ in range(num_iters):
        assignment = nearest_codes(vectors, centroids)
        counts = torch.bincount(assignment, minlength=num_clusters).float()
        sums = torch.zeros_like(centroids).index_add_(0, assignment, vectors)
        updated = sums / counts.clamp_min(1).unsqueeze(1)
        if spherical:
            updated = F.normalize(updated, dim=1)
        centroids = torch.where(counts.unsqueeze(1) > 0, updated, centroids)
    return centroids


class VectorQuantizer(Quantizer):
    r"""
    Vector quantizer with straight-through gradients.

    Losses follow the VQ-VAE paper with β on the commitment term: `codebook_loss = ||sg[z_e] − z_q||²` and
    `commitment_loss = β·||z_e − sg[z_q]||²`. (taming-transformers and diffusers put β on the codebook term;
    `legacy_beta=True` reproduces that for converted checkpoints.)

    Args:
        num_embeddings (`int`): Codebook size K.
        embedding_dim (`int`): Channels of the latents to quantize.
        codebook_dim (`int`, *optional*):
            Dimension of the codes when smaller than `embedding_dim` (ViT-VQGAN / LlamaGen low-dimensional codes):
            latents are projected in before the lookup and out after it. Defaults to `embedding_dim`.
        beta (`float`, defaults to 0.25): Commitment weight β.
        use_l2_norm (`bool`): Compare l2-normalised latents with l2-normalised codes (cosine similarity).
        use_ema (`bool`):
            Update codes as exponential moving averages of their assigned latents instead of by gradient
            (VQ-VAE-2); the codebook loss is then zero and the codebook receives no gradient.
        decay (`float`, defaults to 0.99): EMA decay, also used for the usage tracker behind dead-code restarts.
        epsilon (`float`, defaults to 1e-5): Laplace smoothing of the EMA cluster sizes.
        kmeans_init (`bool`): Initialise the codebook by k-means on the first training batch.
        kmeans_iters (`int`, defaults to 10): Lloyd iterations for `kmeans_init`.
        dead_code_threshold (`float`, defaults to 0):
            Codes whose EMA count of assignments per batch falls below this are re-seeded from random latents of the
            current batch; 0 disables restarts.
        legacy_beta (`bool`): Put β on the codebook term as taming-transformers does.
    """

    distance_chunk_elements: int = DEFAULT_DISTANCE_CHUNK_ELEMENTS
    # vq_hub's own bookkeeping, which checkpoints of other libraries lack (converters keep their fresh values).
    statistics_buffers = ("ema_cluster_size", "initialized", "num_restarts")

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        codebook_dim: int | None = None,
        beta: float = 0.25,
        use_l2_norm: bool = False,
        use_ema: bool = False,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        dead_code_threshold: float = 0.0,
        legacy_beta: bool = False,
    ):
        super().__init__()
        codebook_dim = codebook_dim or embedding_dim
        if num_embeddings < 1 or embedding_dim < 1 or codebook_dim < 1:
            raise ValueError("`num_embeddings`, `embedding_dim` and `codebook_dim` must be positive integers")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"`decay` must lie in [0, 1), got {decay}")
        self.codebook_size = num_embeddings
        self.embedding_dim = embedding_dim
        self.codebook_dim = codebook_dim
        self.beta = beta
        self.use_l2_norm = use_l2_norm
        self.use_ema = use_ema
        self.decay = decay
        self.epsilon = epsilon
        self.kmeans_iters = kmeans_iters
        self.dead_code_threshold = dead_code_threshold
        self.legacy_beta = legacy_beta

        self.project_in = nn.Linear(embedding_dim, codebook_dim) if codebook_dim != embedding_dim else nn.Identity()
        self.project_out = nn.Linear(codebook_dim, embedding_dim) if codebook_dim != embedding_dim else nn.Identity()
        self.embedding = nn.Embedding(num_embeddings, codebook_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / num_embeddings, 1.0 / num_embeddings)
        if use_l2_norm:
            self.embedding.weight.data = F.normalize(self.embedding.weight.data, dim=1)
        if use_ema:
            self.embedding.weight.requires_grad_(False)

        # EMA state starts as if every code had been assigned one vector equal to itself, so the first EMA update
        # moves codes smoothly instead of dividing by a near-zero cluster size.
        self.register_buffer("ema_cluster_size", torch.ones(num_embeddings))
        if use_ema:
            self.register_buffer("ema_embed_sum", self.embedding.weight.detach().clone())
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self.register_buffer("num_restarts", torch.tensor(0, dtype=torch.long))
        self._restarted: torch.BoolTensor | None = None  # rows restarted since `pop_restarted_codes`

    # ----------------------------------------------------------------------------------------------- public API

    @property
    def codebook(self) -> torch.Tensor:
        """The codes as used for lookup, (K, codebook_dim); l2-normalised when `use_l2_norm`."""
        weight = self.embedding.weight
        return F.normalize(weight, dim=1) if self.use_l2_norm else weight

    def forward(self, latents: torch.Tensor) -> QuantizerOutput:
        self.check_latents(latents)
        batch, channels, height, width = latents.shape
        with torch.autocast(device_type=latents.device.type, enabled=False):
            vectors = self._to_codebook_space(latents)
            if self.training:
                if not bool(self.initialized):
                    self._initialize_by_kmeans(vectors.detach())
                # Before the lookup: a restarted code is then chosen, and receives gradient, only for what it is now.
                self._restart_dead_codes(vectors.detach())
            codebook = self.codebook.float()
            codes = nearest_codes(vectors, codebook, self.distance_chunk_elements)
            quantized = F.embedding(codes, codebook)
            counts, batch_perplexity, usage = self.code_statistics(codes)

            codebook_loss, commitment_loss = self._losses(vectors, quantized)
            if self.training:
                self._update_codebook(vectors.detach(), codes, counts)

            quantized = apply_projection(self.project_out, straight_through(quantized, vectors))
        quantized = quantized.view(batch, height, width, channels).permute(0, 3, 1, 2).to(latents.dtype)
        return QuantizerOutput(
            quantized=quantized,
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
            vectors = self._to_codebook_space(latents)
            return nearest_codes(vectors, self.codebook, self.distance_chunk_elements).view(batch, height, width)

    def codes_to_latents(self, codes: torch.LongTensor) -> torch.Tensor:
        self.check_codes(codes)
        batch, height, width = codes.shape
        vectors = apply_projection(self.project_out, F.embedding(codes.reshape(-1).long(), self.codebook.float()))
        return vectors.view(batch, height, width, self.embedding_dim).permute(0, 3, 1, 2)

    # ----------------------------------------------------------------------------------------------- internals

    def _to_codebook_space(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) latents → (B·H·W, codebook_dim) float32 vectors, projected and normalised as configured."""
        vectors = latents.permute(0, 2, 3, 1).reshape(-1, self.embedding_dim)
        vectors = apply_projection(self.project_in, vectors).float()
        return F.normalize(vectors, dim=1) if self.use_l2_norm else vectors

    def _losses(self, vectors: torch.Tensor, quantized: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codebook_term = F.mse_loss(quantized, vectors.detach())
        commitment_term = F.mse_loss(vectors, quantized.detach())
        if self.use_ema:
            codebook_term = torch.zeros_like(codebook_term)
        if self.legacy_beta:
            return self.beta * codebook_term, commitment_term
        return codebook_term, self.beta * commitment_term

    @torch.no_grad()
    def _initialize_by_kmeans(self, vectors: torch.Tensor) -> None:
        if is_main_process():
            centroids = kmeans(vectors, self.codebook_size, self.kmeans_iters, spherical=self.use_l2_norm)
        else:  # receives rank 0's centroids, so every rank starts from one codebook
            centroids = torch.empty(self.codebook_size, self.codebook_dim, device=vectors.device)
        broadcast_from_main(centroids)
        self.embedding.weight.data.copy_(centroids)
        self.ema_cluster_size.fill_(1.0)
        if self.use_ema:
            self.ema_embed_sum.copy_(centroids)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _update_codebook(self, vectors: torch.Tensor, codes: torch.Tensor, counts: torch.Tensor) -> None:
        """EMA of cluster sizes (always: it drives dead-code restarts) and, with `use_ema`, of the codes."""
        self.ema_cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        if self.use_ema:
            embed_sum = torch.zeros_like(self.ema_embed_sum).index_add_(0, codes, vectors)
            all_reduce_sum(embed_sum)
            self.ema_embed_sum.mul_(self.decay).add_(embed_sum, alpha=1 - self.decay)
            total = self.ema_cluster_size.sum()
            smoothed = (self.ema_cluster_size + self.epsilon) / (total + self.codebook_size * self.epsilon) * total
            self.embedding.weight.data.copy_(self.ema_embed_sum / smoothed.unsqueeze(1))

    def pop_restarted_codes(self) -> torch.BoolTensor | None:
        """The codebook rows restarted since the last call (a `(K,)` mask, or None), for the training loop to reset
        their optimizer state (`vq_hub.training_utils.reset_restarted_codes`)."""
        restarted, self._restarted = self._restarted, None
        return restarted

    @torch.no_grad()
    def _restart_dead_codes(self, vectors: torch.Tensor) -> None:
        """Re-seed codes whose EMA usage fell under the threshold with random latents of this batch, before the batch
        is looked up, so the step's assignments and gradients concern the new codes only.

        The usage EMA is identical on every rank (its counts are all-reduced), so all ranks agree on which codes are
        dead; the replacement latents come from rank 0 so the codebooks stay identical too.
        """
        if self.dead_code_threshold <= 0:
            return
        dead = self.ema_cluster_size < self.dead_code_threshold
        num_dead = int(dead.sum())
        if num_dead == 0:
            return
        replacements = vectors[torch.randint(0, vectors.shape[0], (num_dead,), device=vectors.device)]
        if is_distributed():
            replacements = broadcast_from_main(replacements.contiguous())
        self.embedding.weight.data[dead] = replacements
        self.ema_cluster_size[dead] = self.dead_code_threshold
        if self.use_ema:
            self.ema_embed_sum[dead] = replacements * self.dead_code_threshold
        self.num_restarts += num_dead
        self._restarted = dead if self._restarted is None else self._restarted | dead

