"""Nearest-neighbour vector quantization (VQ-VAE) with the codebook tricks that keep it healthy."""

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.distributed import all_reduce_sum, broadcast_from_main, is_distributed, is_main_process
from .base import Quantizer, QuantizerOutput, apply_projection, straight_through

# Scores are computed in tiles of about this many float32 values (2 MiB, the two cores' L2 caches), so the argmax
# reads them from cache: the N×K matrix is never written to memory, let alone held (K = 65,536 works at any batch).
DEFAULT_TILE_ELEMENTS = 2**19
# Codebook rows per tile, capped so the block of codes a tile uses (rows × dim floats, 1 MiB) stays in cache too.
CODEBOOK_BLOCK_ELEMENTS = 2**18
# Scores per group in the two-stage argmax: `amax` over groups of this many is vectorised, while `argmax` with its
# index bookkeeping runs element by element, ~20x slower on a CPU; so argmax only sees the group maxima and one group.
ARGMAX_GROUP = 64


def _tile_argmax(tile: torch.Tensor) -> tuple[torch.Tensor, torch.LongTensor]:
    """`tile.max(dim=1)` (ties to the lowest index), by group maxima first, then the argmax inside the best group;
    the columns past the last whole group are reduced directly."""
    rows, columns = tile.shape
    whole = columns - columns % ARGMAX_GROUP
    if whole <= ARGMAX_GROUP:
        return tile.max(dim=1)
    groups = tile[:, :whole].view(rows, whole // ARGMAX_GROUP, ARGMAX_GROUP)
    score, group = groups.amax(dim=2).max(dim=1)  # the first group holding the row's maximum
    within = groups[torch.arange(rows, device=tile.device), group].argmax(dim=1)  # its first occurrence there
    index = group * ARGMAX_GROUP + within
    if whole < columns:  # the rest wins only if strictly better: an earlier column keeps a tie
        rest_score, rest_index = tile[:, whole:].max(dim=1)
        better = rest_score > score
        score, index = torch.where(better, rest_score, score), torch.where(better, rest_index + whole, index)
    return score, index


# On a GPU the cost of the search is kernel launches, not cache misses: the whole codebook goes into one product per
# block of rows, and the rows per block are bounded by this budget of float32 scores (2 GiB), so K = 262,144 codes at
# N = 65,536 vectors runs in 8 blocks instead of allocating 64 GiB; at N·K ≤ 2^29 the search is one product + argmax.
GPU_SCORE_BUDGET_ELEMENTS = 2**29
SEARCH_PLANS = ("auto", "cpu", "gpu")


@contextlib.contextmanager
def exact_float32_matmuls() -> Iterator[None]:
    """CUDA float32 matmuls in full precision for the block (TF32 off), whatever the caller's setting."""
    matmul = torch.backends.cuda.matmul
    previous = matmul.allow_tf32
    matmul.allow_tf32 = False
    try:
        yield
    finally:
        matmul.allow_tf32 = previous


@torch.no_grad()
def nearest_codes(
    vectors: torch.Tensor,
    codebook: torch.Tensor,
    normalized: bool = False,
    tile_elements: int | None = None,
    plan: str = "auto",
) -> torch.LongTensor:
    """Index of the nearest codebook row (squared L2) for every row of `vectors` `(N, D)`, computed in float32.

    `argmin_k ||z − e_k||² = argmax_k (z·e_k − ½||e_k||²)`: ||z||² is the same for every k and never computed, and
    −½||e_k||² is folded into the product as the `addmm` bias. With `normalized=True` (l2-normalised vectors and
    codes, all norms 1) the dot product alone decides. Ties go to the lowest index, as `argmin` does.

    Two plans give the same codes: `"cpu"` makes and reduces scores in cache-sized tiles (a block of vectors against a
    block of codes, a running best per vector across code blocks, `tile_elements` scores per tile); `"gpu"` multiplies
    blocks of rows by the whole codebook, one `addmm` and one `argmax` per block of at most `tile_elements` scores
    (default `GPU_SCORE_BUDGET_ELEMENTS`), a handful of launches per call. `"auto"` picks by the vectors' device.
    """
    if plan not in SEARCH_PLANS:
        raise ValueError(f"`plan` must be one of {SEARCH_PLANS}, got {plan!r}")
    if plan == "auto":
        plan = "cpu" if vectors.device.type == "cpu" else "gpu"
    if vectors.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=vectors.device)
    if codebook.shape[0] == 0:
        raise ValueError("`codebook` is empty: there is no code to be nearest to")
    # float32 scores even when called in autocast, and with TF32 off: the training scripts turn TF32 on for the rest of
    # the model on CUDA, and its 10-bit mantissas would move ~0.1% of codes near a tie away from `tokenize`'s codes.
    with torch.autocast(device_type=vectors.device.type, enabled=False), exact_float32_matmuls():
        vectors, codebook = vectors.float(), codebook.float()
        bias = None if normalized else codebook.pow(2).sum(dim=1).mul_(-0.5)
        if plan == "gpu":
            return _nearest_codes_by_row_blocks(vectors, codebook, bias, tile_elements or GPU_SCORE_BUDGET_ELEMENTS)
        return _nearest_codes_by_cache_tiles(vectors, codebook, bias, tile_elements or DEFAULT_TILE_ELEMENTS)


def _nearest_codes_by_row_blocks(
    vectors: torch.Tensor, codebook: torch.Tensor, bias: torch.Tensor | None, budget: int
) -> torch.LongTensor:
    """The GPU plan: every block of rows against the whole codebook (no running best, no index arithmetic)."""
    num_vectors, num_codes = vectors.shape[0], codebook.shape[0]
    row_block = min(num_vectors, max(1, budget // num_codes))
    codes = torch.empty(num_vectors, dtype=torch.long, device=vectors.device)
    for row in range(0, num_vectors, row_block):
        block = vectors[row : row + row_block]
        scores = block @ codebook.t() if bias is None else torch.addmm(bias, block, codebook.t())
        torch.argmax(scores, dim=1, out=codes[row : row + block.shape[0]])
    return codes


def _nearest_codes_by_cache_tiles(
    vectors: torch.Tensor, codebook: torch.Tensor, bias: torch.Tensor | None, tile_elements: int
) -> torch.LongTensor:
    """The CPU plan: scores made and reduced tile by tile, so they never leave the cache (across code blocks,
    products of two shapes may round a tie apart)."""
    num_vectors, (num_codes, dim) = vectors.shape[0], codebook.shape
    code_block = min(num_codes, max(1, CODEBOOK_BLOCK_ELEMENTS // dim))
    row_block = min(num_vectors, max(1, tile_elements // code_block))
    buffer = torch.empty(row_block * code_block, device=vectors.device)  # one buffer, reused by every tile
    codes = torch.empty(num_vectors, dtype=torch.long, device=vectors.device)
    for row in range(0, num_vectors, row_block):
        block = vectors[row : row + row_block]
        best_score = best_code = None
        for first in range(0, num_codes, code_block):
            codes_block = codebook[first : first + code_block]
            tile = buffer[: block.shape[0] * codes_block.shape[0]].view(block.shape[0], codes_block.shape[0])
            if bias is None:
                torch.mm(block, codes_block.t(), out=tile)
            else:
                torch.addmm(bias[first : first + code_block], block, codes_block.t(), out=tile)
            score, code = _tile_argmax(tile)
            if best_code is None:
                best_score, best_code = score, code
            else:  # strictly better only: an earlier block keeps a tie
                better = score > best_score
                best_score = torch.where(better, score, best_score)
                best_code = torch.where(better, code + first, best_code)
        codes[row : row + block.shape[0]] = best_code
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
        assignment = nearest_codes(vectors, centroids, normalized=spherical)
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
        self._known_initialized = False

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
                if not self._initialized():
                    self._initialize_by_kmeans(vectors.detach())
                # Before the lookup: a restarted code is then chosen, and receives gradient, only for what it is now.
                self._restart_dead_codes(vectors.detach())
            codebook = self.codebook.float()
            codes = nearest_codes(vectors, codebook, normalized=self.use_l2_norm)
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
            codes = nearest_codes(vectors, self.codebook, normalized=self.use_l2_norm)
            return codes.view(batch, height, width)

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
        self._known_initialized = True

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
        if is_distributed():  # only the dead rows travel from rank 0: worth one host sync per step
            if not bool(dead.any()):
                return
            picks = torch.randint(0, vectors.shape[0], (int(dead.sum()),), device=vectors.device)
            rows = torch.zeros_like(self.embedding.weight)
            rows[dead] = broadcast_from_main(vectors[picks].contiguous())
        else:  # a candidate for every code, kept where the code is dead: no host sync in the training step
            rows = vectors[torch.randint(0, vectors.shape[0], (self.codebook_size,), device=vectors.device)]
        column = dead.unsqueeze(1)
        self.embedding.weight.data.copy_(torch.where(column, rows, self.embedding.weight.data))
        self.ema_cluster_size.copy_(torch.where(dead, self.dead_code_threshold, self.ema_cluster_size))
        if self.use_ema:
            self.ema_embed_sum.copy_(torch.where(column, rows * self.dead_code_threshold, self.ema_embed_sum))
        self.num_restarts += dead.sum()
        self._restarted = dead if self._restarted is None else self._restarted | dead

    def _initialized(self) -> bool:
        """Whether the codebook has had its k-means init: the buffer is read (a host sync) until it says yes, then
        remembered, so a training step does not sync on it."""
        if not self._known_initialized:
            self._known_initialized = bool(self.initialized)
        return self._known_initialized

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._known_initialized = False  # the loaded buffer decides again

