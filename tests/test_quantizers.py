import math

import pytest
import torch
import torch.nn.functional as F

from vq_hub.metrics import code_counts, codebook_usage, perplexity
from vq_hub.quantizers import FSQuantizer, GumbelQuantizer, ResidualQuantizer, VectorQuantizer, kmeans, nearest_codes
from vq_hub.quantizers.vector import DEFAULT_TILE_ELEMENTS

QUANTIZERS = {
    "vector": lambda: VectorQuantizer(16, 4),
    "vector-ema": lambda: VectorQuantizer(16, 4, use_ema=True),
    "vector-l2": lambda: VectorQuantizer(16, 4, use_l2_norm=True),
    "vector-lowdim": lambda: VectorQuantizer(16, 4, codebook_dim=2),
    "vector-kmeans-restart": lambda: VectorQuantizer(16, 4, kmeans_init=True, dead_code_threshold=0.5),
    "gumbel": lambda: GumbelQuantizer(16, 4),
    "fsq": lambda: FSQuantizer([4, 4], 4),
    "residual": lambda: ResidualQuantizer(16, 4, depth=2, kmeans_init=True, dead_code_threshold=0.5),
}


@pytest.mark.parametrize("name", QUANTIZERS)
@pytest.mark.parametrize("training", [True, False])
def test_shapes_and_code_range(name, training):
    quantizer = QUANTIZERS[name]().train(training)
    latents = torch.randn(2, 4, 3, 5)
    output = quantizer(latents)
    assert output.quantized.shape == latents.shape
    depth = getattr(quantizer, "depth", None)  # a residual quantizer's codes have a depth axis
    assert output.codes.shape == ((2, 3, 5) if depth is None else (2, depth, 3, 5)) and output.codes.dtype == torch.long
    assert 0 <= int(output.codes.min()) and int(output.codes.max()) < quantizer.codebook_size
    for term in (output.codebook_loss, output.commitment_loss, output.auxiliary_loss, output.perplexity):
        assert term.ndim == 0 and torch.isfinite(term)
    assert 0 < float(output.codebook_usage) <= 1


@pytest.mark.parametrize("name", QUANTIZERS)
def test_gradient_passes_straight_through(name):
    quantizer = QUANTIZERS[name]().train()
    latents = torch.randn(2, 4, 3, 3, requires_grad=True)
    output = quantizer(latents)
    (output.quantized.pow(2).sum() + output.loss).backward()
    assert latents.grad is not None and latents.grad.abs().sum() > 0


def test_straight_through_is_identity_and_forward_value_exact():
    quantizer = VectorQuantizer(8, 3).train()
    latents = torch.randn(1, 3, 2, 2, requires_grad=True)
    output = quantizer(latents)
    output.quantized.sum().backward()
    assert torch.equal(latents.grad, torch.ones_like(latents))
    # The forward value is exactly the looked-up code, not code + rounding error.
    assert torch.equal(output.quantized.detach(), quantizer.codes_to_latents(output.codes))


def _hand_made_quantizer(**kwargs) -> VectorQuantizer:
    quantizer = VectorQuantizer(3, 2, beta=0.25, **kwargs)
    quantizer.embedding.weight.data = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-2.0, 0.0]])
    if quantizer.use_ema:
        quantizer.ema_embed_sum.copy_(quantizer.embedding.weight.data)
    return quantizer


# Four latents at 1×4 positions: nearest codes are 0, 1, 2, 1.
HAND_LATENTS = torch.tensor([[0.1, -0.2], [0.8, 1.1], [-1.5, 0.5], [2.0, 2.0]]).t().reshape(1, 2, 1, 4)
HAND_CODES = torch.tensor([[[0, 1, 2, 1]]])


def test_losses_equal_hand_computation_with_beta_on_commitment():
    quantizer = _hand_made_quantizer().train()
    latents = HAND_LATENTS.clone().requires_grad_(True)
    output = quantizer(latents)
    assert torch.equal(output.codes, HAND_CODES)
    codes = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-2.0, 0.0], [1.0, 1.0]])
    vectors = HAND_LATENTS.reshape(2, 4).t()
    mse = ((codes - vectors) ** 2).mean()  # (0.01+0.04 + 0.04+0.01 + 0.25+0.25 + 1+1) / 8
    assert math.isclose(float(mse), 2.6 / 8, rel_tol=1e-6)
    assert math.isclose(output.codebook_loss.item(), float(mse), rel_tol=1e-6)
    assert math.isclose(output.commitment_loss.item(), 0.25 * float(mse), rel_tol=1e-6)

    # The codebook term trains only the codebook; the commitment term trains only the encoder side.
    output.codebook_loss.backward(retain_graph=True)
    assert latents.grad is None and quantizer.embedding.weight.grad.abs().sum() > 0
    quantizer.embedding.weight.grad = None
    output.commitment_loss.backward()
    assert latents.grad.abs().sum() > 0 and quantizer.embedding.weight.grad is None


def test_legacy_beta_moves_beta_to_codebook_term():
    output = _hand_made_quantizer(legacy_beta=True).train()(HAND_LATENTS)
    assert math.isclose(output.codebook_loss.item(), 0.25 * 2.6 / 8, rel_tol=1e-6)
    assert math.isclose(output.commitment_loss.item(), 2.6 / 8, rel_tol=1e-6)


def test_ema_update_matches_formula():
    decay, epsilon = 0.5, 1e-5
    quantizer = _hand_made_quantizer(use_ema=True, decay=decay, epsilon=epsilon).train()
    old_codebook = quantizer.embedding.weight.detach().clone()
    output = quantizer(HAND_LATENTS)
    assert float(output.codebook_loss) == 0.0
    assert not quantizer.embedding.weight.requires_grad

    vectors = HAND_LATENTS.reshape(2, 4).t()
    counts = torch.tensor([1.0, 2.0, 1.0])
    sums = torch.stack([vectors[0], vectors[1] + vectors[3], vectors[2]])
    cluster_size = decay * torch.ones(3) + (1 - decay) * counts
    embed_sum = decay * old_codebook + (1 - decay) * sums
    total = cluster_size.sum()
    smoothed = (cluster_size + epsilon) / (total + 3 * epsilon) * total
    torch.testing.assert_close(quantizer.ema_cluster_size, cluster_size)
    torch.testing.assert_close(quantizer.ema_embed_sum, embed_sum)
    torch.testing.assert_close(quantizer.embedding.weight.data, embed_sum / smoothed[:, None])


def test_eval_mode_leaves_state_untouched():
    quantizer = VectorQuantizer(8, 2, use_ema=True, kmeans_init=True, dead_code_threshold=10.0).eval()
    before = {k: v.clone() for k, v in quantizer.state_dict().items()}
    quantizer(torch.randn(2, 2, 4, 4))
    quantizer.latents_to_codes(torch.randn(2, 2, 4, 4))
    for key, value in quantizer.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("use_ema", [False, True])
def test_dead_codes_are_restarted_from_batch_latents(use_ema):
    quantizer = _hand_made_quantizer(use_ema=use_ema, decay=0.5, dead_code_threshold=0.3).train()
    # Every latent sits near code 0, so codes 1 and 2 go unused: usage 1 → 0.5 → 0.25 < 0.3 after two steps.
    latents = torch.full((1, 2, 2, 2), 0.05) + 0.01 * torch.randn(1, 2, 2, 2)
    quantizer(latents)
    quantizer(latents)
    assert int(quantizer.num_restarts) == 0, "restarts happen at the start of the next forward, before its lookup"
    output = quantizer(latents)
    assert int(quantizer.num_restarts) == 2 and quantizer.pop_restarted_codes().tolist() == [False, True, True]
    assert quantizer.pop_restarted_codes() is None
    batch_vectors = latents.permute(0, 2, 3, 1).reshape(-1, 2)
    for code in (1, 2):
        distances = (batch_vectors - quantizer.embedding.weight[code].detach()).norm(dim=1)
        assert float(distances.min()) < 1e-6, "a restarted code must equal a latent of the current batch"
        # Restarted at the threshold, then this forward's EMA update counts the vectors it now wins.
        count = int((output.codes == code).sum())
        assert count >= 1 and float(quantizer.ema_cluster_size[code]) == pytest.approx(0.3 * 0.5 + 0.5 * count)


def test_kmeans_init_finds_separated_clusters():
    centres = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0], [0.0, -5.0]])
    vectors = centres.repeat_interleave(16, dim=0) + 0.1 * torch.randn(64, 2)
    latents = vectors.t().reshape(1, 2, 8, 8)
    quantizer = VectorQuantizer(4, 2, kmeans_init=True).train()
    assert not bool(quantizer.initialized)
    output = quantizer(latents)
    assert bool(quantizer.initialized)
    assert float(output.codebook_usage) == 1.0
    assert math.isclose(float(output.perplexity), 4.0, rel_tol=1e-5)
    distance_to_nearest_code = torch.cdist(centres, quantizer.embedding.weight.detach()).min(dim=1).values
    assert float(distance_to_nearest_code.max()) < 0.1


def test_spherical_kmeans_returns_unit_centroids():
    centroids = kmeans(F.normalize(torch.randn(100, 3), dim=1), 5, spherical=True)
    torch.testing.assert_close(centroids.norm(dim=1), torch.ones(5))


def test_l2_normalised_codes_are_unit_vectors():
    quantizer = VectorQuantizer(16, 4, use_l2_norm=True).train()
    output = quantizer(torch.randn(2, 4, 3, 3))
    torch.testing.assert_close(quantizer.codebook.norm(dim=1), torch.ones(16))
    torch.testing.assert_close(output.quantized.norm(dim=1), torch.ones(2, 3, 3))


def test_low_dimensional_codes_use_projections():
    quantizer = VectorQuantizer(16, 8, codebook_dim=2)
    assert quantizer.embedding.weight.shape == (16, 2)
    assert quantizer.project_in.weight.shape == (2, 8) and quantizer.project_out.weight.shape == (8, 2)
    latents = torch.randn(1, 8, 4, 4)
    codes = quantizer.latents_to_codes(latents)
    vectors = quantizer.project_in(latents.permute(0, 2, 3, 1).reshape(-1, 8))
    assert torch.equal(codes.reshape(-1), torch.cdist(vectors, quantizer.embedding.weight).argmin(dim=1))


def reference_nearest_codes(vectors: torch.Tensor, codebook: torch.Tensor) -> torch.LongTensor:
    """The plain formula, in float64 and in one piece: what every fast path must agree with."""
    return torch.cdist(vectors.double(), codebook.double()).argmin(dim=1)


@pytest.mark.parametrize("plan", ["cpu", "gpu"])
@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("num_codes, dim", [(300, 16), (5000, 3), (70, 256)])
def test_tiled_search_equals_the_plain_formula(num_codes, dim, normalized, plan):
    """Any tiling (one tile, a row at a time, several code blocks with a running best) picks the nearest code; where
    two codes are equally near in float32 the lowest index wins, as `argmin`, inside one group of the two-stage
    argmax and across groups of one block. Across code blocks the two matrix products (other shapes, other kernels)
    may round an exact tie apart by an ulp, so either copy may win there, both at the least distance. The GPU plan
    (forced here on CPU tensors: the same torch calls) splits rows only, so every tie is inside one product."""
    generator = torch.Generator().manual_seed(num_codes)
    vectors, codebook = torch.randn(1000, dim, generator=generator), torch.randn(num_codes, dim, generator=generator)
    if normalized:
        vectors, codebook = F.normalize(vectors, dim=1), F.normalize(codebook, dim=1)
    ties = [(3, 7)] + ([(20, 150), (30, num_codes - 1)] if num_codes > 150 else [])  # in one block of codes, the
    # last one in the columns past the last whole group of the two-stage argmax
    for row, (kept, copy) in enumerate(ties):  # exact ties: the lower code must win
        codebook[copy] = codebook[kept]
        vectors[row] = codebook[kept]
    expected = reference_nearest_codes(vectors, codebook)
    exact = torch.cdist(vectors.double(), codebook.double())
    margin = exact.topk(2, dim=1, largest=False).values.diff(dim=1).squeeze(1)
    for tile_elements in (10**9, 1000, 1, 2**19):
        codes = nearest_codes(vectors, codebook, normalized=normalized, tile_elements=tile_elements, plan=plan)
        clear = margin > 1e-5  # where the nearest code is unique at float32 precision, the codes are identical
        assert torch.equal(codes[clear], expected[clear])
        assert codes[: len(ties)].tolist() == [kept for kept, _ in ties]
        torch.testing.assert_close(exact.gather(1, codes[:, None]).squeeze(1), exact.min(dim=1).values)


def test_large_codebook_never_materialises_full_distance_matrix(monkeypatch):
    num_vectors, codebook_size, dim = 4096, 65536, 256
    largest = []
    real_addmm = torch.addmm

    def recording_addmm(*args, **kwargs):
        result = real_addmm(*args, **kwargs)
        largest.append(result.numel())
        return result

    monkeypatch.setattr(torch, "addmm", recording_addmm)
    codes = nearest_codes(torch.randn(num_vectors, dim), torch.randn(codebook_size, dim))
    assert codes.shape == (num_vectors,)
    assert max(largest) <= DEFAULT_TILE_ELEMENTS < num_vectors * codebook_size


def record_calls(monkeypatch, name: str) -> list[int]:
    """Patch `torch.<name>` to record the number of elements of each result."""
    sizes, real = [], getattr(torch, name)

    def recording(*args, **kwargs):
        result = real(*args, **kwargs)
        sizes.append(result.numel())
        return result

    monkeypatch.setattr(torch, name, recording)
    return sizes


def test_gpu_search_plan_is_one_product_and_one_argmax_per_row_block(monkeypatch):
    """The GPU plan launches a handful of kernels: one addmm and one argmax per block of rows, the blocks bounded by
    the score budget (a user at K = 262,144 must not allocate N·K floats at once)."""
    products, reductions = record_calls(monkeypatch, "addmm"), record_calls(monkeypatch, "argmax")
    vectors, codebook = torch.randn(4096, 8), torch.randn(16384, 8)
    codes = nearest_codes(vectors, codebook, plan="gpu")
    assert len(products) == 1 and len(reductions) == 1 and products[0] == 4096 * 16384
    assert torch.equal(codes, reference_nearest_codes(vectors, codebook))
    products.clear()
    reductions.clear()
    budget = 2**20  # 64 rows × 16,384 codes per block
    nearest_codes(vectors, codebook, plan="gpu", tile_elements=budget)
    assert len(products) == len(reductions) == 4096 // 64 and max(products) == budget


def test_search_plan_is_checked():
    with pytest.raises(ValueError, match="`plan` must be one of"):
        nearest_codes(torch.randn(4, 2), torch.randn(3, 2), plan="cuda")


def test_search_runs_in_float32_when_called_under_autocast():
    vectors, codebook = torch.randn(512, 16), torch.randn(1024, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        codes = {plan: nearest_codes(vectors, codebook, plan=plan) for plan in ("cpu", "gpu")}
    expected = reference_nearest_codes(vectors, codebook)
    assert torch.equal(codes["cpu"], expected) and torch.equal(codes["gpu"], expected)


def test_distances_are_float32_under_autocast():
    quantizer = VectorQuantizer(64, 8).train()
    latents = torch.randn(2, 8, 4, 4)
    expected = quantizer.latents_to_codes(latents)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = quantizer(latents)
    assert torch.equal(output.codes, expected)
    assert output.commitment_loss.dtype == torch.float32


def test_statistics_equal_hand_computation():
    counts = code_counts(torch.tensor([0, 0, 1, 1]), 4)
    assert counts.tolist() == [2.0, 2.0, 0.0, 0.0]
    assert math.isclose(float(perplexity(counts)), 2.0, rel_tol=1e-6)
    assert float(codebook_usage(counts)) == 0.5
    assert math.isclose(float(perplexity(code_counts(torch.arange(8), 8))), 8.0, rel_tol=1e-6)


def test_gumbel_kl_and_hard_codes():
    quantizer = GumbelQuantizer(5, 3, kl_weight=0.1)
    latents = torch.randn(2, 3, 2, 2)
    logits = quantizer.to_logits(latents)
    probs = logits.softmax(dim=1)
    expected_kl = (probs * torch.log(probs * 5)).sum(dim=1).mean()

    train_output = quantizer.train()(latents)
    torch.testing.assert_close(train_output.auxiliary_loss, 0.1 * expected_kl)

    eval_output = quantizer.eval()(latents)
    assert torch.equal(eval_output.codes, logits.argmax(dim=1))
    torch.testing.assert_close(eval_output.quantized, quantizer.codes_to_latents(eval_output.codes))
    assert torch.equal(quantizer.latents_to_codes(latents), eval_output.codes)


def test_fsq_indices_round_trip():
    quantizer = FSQuantizer([8, 5, 5, 5], 4)
    assert quantizer.codebook_size == 1000
    indices = torch.arange(1000)
    values = quantizer.indices_to_normalized(indices)
    assert values.min() >= -1 and values.max() <= 1
    half_width = (quantizer.levels // 2).float()
    assert torch.equal(quantizer._levels_to_index(values * half_width + half_width), indices)
    assert len({tuple(v) for v in values.tolist()}) == 1000  # every index is a distinct point


def test_fsq_forward_agrees_with_token_api_and_uses_each_level():
    quantizer = FSQuantizer([8, 5, 5, 5], 4)
    latents = 3 * torch.randn(4, 4, 8, 8)
    output = quantizer(latents)
    assert torch.equal(output.codes, quantizer.latents_to_codes(latents))
    assert torch.equal(output.quantized, quantizer.codes_to_latents(output.codes))
    level_index = (output.codes.reshape(-1, 1) // quantizer.basis) % quantizer.levels
    for dim, levels in enumerate([8, 5, 5, 5]):
        assert set(level_index[:, dim].tolist()) == set(range(levels))


def test_fsq_projects_when_dims_differ():
    quantizer = FSQuantizer([5, 5, 5], 16)
    output = quantizer(torch.randn(1, 16, 2, 2))
    assert output.quantized.shape == (1, 16, 2, 2) and quantizer.codebook_size == 125


@pytest.mark.parametrize(
    "codes, error",
    [
        (torch.zeros(2, 2), ValueError),
        (torch.zeros(1, 2, 2), TypeError),
        (torch.full((1, 2, 2), 16), ValueError),
        (torch.full((1, 2, 2), -1), ValueError),
    ],
)
def test_codes_to_latents_rejects_bad_codes(codes, error):
    for quantizer in (VectorQuantizer(16, 4), GumbelQuantizer(16, 4), FSQuantizer([4, 4], 4)):
        with pytest.raises(error, match="`codes`"):
            quantizer.codes_to_latents(codes)


def test_wrong_latent_channels_rejected():
    with pytest.raises(ValueError, match="4 channels"):
        VectorQuantizer(16, 4)(torch.randn(1, 3, 2, 2))


def test_search_turns_tf32_off_and_restores_it(monkeypatch):
    """The training scripts turn TF32 on for the model on CUDA; the distances must stay exact float32 (TF32's 10-bit
    mantissas moved ~0.1% of codes near a tie in a simulation), and the caller's setting must come back."""
    seen = []
    real_addmm = torch.addmm

    def recording_addmm(*args, **kwargs):
        seen.append(torch.backends.cuda.matmul.allow_tf32)
        return real_addmm(*args, **kwargs)

    monkeypatch.setattr(torch, "addmm", recording_addmm)
    previous = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        nearest_codes(torch.randn(64, 8), torch.randn(32, 8), plan="gpu")
        assert seen == [False] and torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def test_search_of_no_vectors_is_empty_and_an_empty_codebook_is_refused():
    for plan in ("cpu", "gpu"):
        assert nearest_codes(torch.randn(0, 8), torch.randn(32, 8), plan=plan).shape == (0,)
    with pytest.raises(ValueError, match="`codebook` is empty"):
        nearest_codes(torch.randn(4, 8), torch.randn(0, 8))
