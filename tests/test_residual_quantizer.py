"""The residual quantizer (RQ-VAE): hand-checked codes and losses, straight-through gradients, statistics per depth
and across processes, float32 under autocast, refused bad input, and the `(B, depth, h, w)` codes of a tokenizer
through save/load and a training run."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import ROOT, load_example, tiny_vq_config

from vq_hub import ResidualQuantizer, VQVAEModel
from vq_hub.code_levels import DepthView, code_depth, code_depths, codebook_counts, level_views
from vq_hub.quantizers import QuantizerSettings, VectorQuantizer

RESIDUAL_CONFIG = dict(quantizer_type="residual", quantizer_depth=2)


def hand_made() -> ResidualQuantizer:
    """Depth 2, three 2-d codes per depth, plain (no projections, no normalisation), β = 0.25."""
    quantizer = ResidualQuantizer(3, 2, depth=2, beta=0.25)
    quantizer.depth_quantizers[0].embedding.weight.data = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-2.0, 0.0]])
    quantizer.depth_quantizers[1].embedding.weight.data = torch.tensor([[0.0, 0.0], [0.25, 0.0], [0.0, -0.5]])
    return quantizer


# Three positions (latents (1, 2, 3, 1)): the second's depth-1 code is 2 because depth 1 sees the residual (0, -0.4);
# the latent itself would be nearest to depth 1's code 1.
HAND_LATENTS = torch.tensor([[1.2, 0.9], [1.0, 0.6], [-1.9, -0.6]]).t().reshape(1, 2, 3, 1)


def test_hand_checked_codes_quantized_latents_and_losses():
    quantizer = hand_made().eval()
    output = quantizer(HAND_LATENTS)
    assert output.codes.shape == (1, 2, 3, 1)
    assert output.codes[0, :, :, 0].tolist() == [[1, 1, 2], [1, 2, 2]]
    expected = torch.tensor([[1.25, 1.0], [1.0, 0.5], [-2.0, -0.5]])
    assert torch.equal(output.quantized[0, :, :, 0].t(), expected)
    # Each depth's mean squared error against its own residual, summed over depths; β on the commitment term.
    depth0 = (0.2**2 + 0.1**2 + 0.0**2 + 0.4**2 + 0.1**2 + 0.6**2) / 6
    depth1 = (0.05**2 + 0.1**2 + 0.0**2 + 0.1**2 + 0.1**2 + 0.1**2) / 6
    assert float(output.codebook_loss.detach()) == pytest.approx(depth0 + depth1)
    assert float(output.commitment_loss) == pytest.approx(0.25 * (depth0 + depth1))
    assert float(output.auxiliary_loss) == 0.0
    # The token API gives the same codes and, bit for bit, the same latents; the first depth alone is coarser.
    assert torch.equal(quantizer.latents_to_codes(HAND_LATENTS), output.codes)
    assert torch.equal(quantizer.codes_to_latents(output.codes), output.quantized)
    coarse = quantizer.partial_codes_to_latents(output.codes, 1)[0, :, :, 0].t()
    assert torch.equal(coarse, torch.tensor([[1.0, 1.0], [1.0, 1.0], [-2.0, 0.0]]))


def test_statistics_per_depth_and_overall():
    quantizer = hand_made().eval()
    output = quantizer(HAND_LATENTS)
    # Depth 0 uses codes {1: 2, 2: 1}, depth 1 {1: 1, 2: 2}: usage 2/3 each, perplexity exp(H(2/3, 1/3)) each.
    entropy = -(2 / 3 * torch.log(torch.tensor(2 / 3)) + 1 / 3 * torch.log(torch.tensor(1 / 3)))
    torch.testing.assert_close(output.depth_perplexity, entropy.exp().repeat(2))
    torch.testing.assert_close(output.depth_codebook_usage, torch.tensor([2 / 3, 2 / 3]))
    torch.testing.assert_close(output.perplexity, entropy.exp())  # the mean over per-depth codebooks
    counts = codebook_counts(quantizer, output.codes)
    assert counts.tolist() == [[0.0, 2.0, 1.0], [0.0, 1.0, 2.0]]


def test_shared_codebook_is_one_codebook_used_at_every_depth_with_pooled_statistics():
    quantizer = ResidualQuantizer(3, 2, depth=2, shared_codebook=True)
    quantizer.depth_quantizers[0].embedding.weight.data = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, -0.5]])
    assert quantizer.num_codebooks == 1 and quantizer.quantizer_at(1) is quantizer.quantizer_at(0)
    assert [key for key in quantizer.state_dict() if key.endswith("embedding.weight")] == [
        "depth_quantizers.0.embedding.weight"
    ]
    output = quantizer.eval()(HAND_LATENTS)
    # (1.2, 0.9) → 1, residual (0.2, -0.1) → 0; (1.0, 0.6) → 1, (0, -0.4) → 2; (-1.9, -0.6) → 2, (-1.9, -0.1) → 0.
    assert output.codes[0, :, :, 0].tolist() == [[1, 1, 2], [0, 2, 0]]
    assert codebook_counts(quantizer, output.codes).tolist() == [[2.0, 2.0, 2.0]]
    torch.testing.assert_close(output.perplexity, torch.tensor(3.0))  # the histogram of both depths together
    assert float(output.codebook_usage) == 1.0


def test_gradient_passes_straight_through_each_depth_and_reaches_every_codebook():
    quantizer = hand_made().train()
    latents = HAND_LATENTS.clone().requires_grad_(True)
    output = quantizer(latents)
    output.quantized.sum().backward()
    # Identity projections: each depth's straight-through path is the identity, so z receives depth × the gradient.
    assert torch.equal(latents.grad, torch.full_like(latents, 2.0))

    quantizer = ResidualQuantizer(16, 4, depth=3, codebook_dim=2, use_l2_norm=True).train()
    latents = torch.randn(2, 4, 3, 3, requires_grad=True)
    output = quantizer(latents)
    (output.quantized.pow(2).sum() + output.loss).backward()
    assert latents.grad.abs().sum() > 0
    for name, parameter in quantizer.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "options",
    [dict(), dict(use_ema=True), dict(kmeans_init=True, dead_code_threshold=0.5), dict(codebook_dim=2, use_l2_norm=True),
     dict(shared_codebook=True, use_ema=True)],
    ids=["plain", "ema", "kmeans-restart", "l2-lowdim", "shared-ema"],
)  # fmt: skip
def test_every_vector_option_per_depth_trains_and_its_token_api_equals_forward(options):
    quantizer = ResidualQuantizer(16, 4, depth=3, **options)
    latents = torch.randn(4, 4, 4, 4)
    before = [quantizer_.embedding.weight.detach().clone() for quantizer_ in quantizer.depth_quantizers]
    output = quantizer.train()(latents)
    assert output.codes.shape == (4, 3, 4, 4) and int(output.codes.max()) < 16
    assert output.depth_perplexity.shape == (3,) and output.depth_codebook_usage.shape == (3,)
    for term in (output.codebook_loss, output.commitment_loss, output.perplexity, output.codebook_usage):
        assert term.ndim == 0 and torch.isfinite(term) and term.dtype == torch.float32
    if options.get("use_ema") or options.get("kmeans_init"):  # the codebooks moved in the training pass
        for weight, quantizer_ in zip(before, quantizer.depth_quantizers):
            assert not torch.equal(weight, quantizer_.embedding.weight)
    if options.get("kmeans_init"):
        assert all(bool(quantizer_.initialized) for quantizer_ in quantizer.depth_quantizers)
    quantizer.eval()
    output = quantizer(latents)
    codes = quantizer.latents_to_codes(latents)
    assert torch.equal(codes, output.codes)
    assert torch.equal(quantizer.codes_to_latents(codes), output.quantized)
    # Each depth leaves a smaller residual on average: the later depths refine.
    errors = [float((latents - quantizer.partial_codes_to_latents(codes, d)).pow(2).mean()) for d in (1, 3)]
    assert errors[1] < errors[0] or options.get("codebook_dim")


def test_bf16_autocast_gives_the_float32_codes_and_float32_losses():
    quantizer = ResidualQuantizer(32, 4, depth=3, codebook_dim=2).eval()
    latents = torch.randn(4, 4, 4, 4)
    expected = quantizer(latents)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = quantizer(latents)
        codes = quantizer.latents_to_codes(latents)
    assert torch.equal(output.codes, expected.codes) and torch.equal(codes, expected.codes)
    assert output.commitment_loss.dtype == torch.float32 and output.quantized.dtype == torch.float32
    torch.testing.assert_close(output.commitment_loss, expected.commitment_loss)


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: ResidualQuantizer(8, 4, depth=0), ValueError, "`depth` must be ≥ 1"),
        (lambda: ResidualQuantizer(8, 4, depth=2.0), TypeError, "`depth` must be an integer"),
        (lambda: ResidualQuantizer(8, 4, shared_codebook="yes"), TypeError, "`shared_codebook`"),
        (lambda: ResidualQuantizer(8, 4, make_quantizer=lambda: VectorQuantizer(4, 4)), ValueError, "8 codes"),
        (lambda: QuantizerSettings(quantizer_type="vector", quantizer_depth=2).build(4), ValueError, "residual"),
        (lambda: QuantizerSettings(quantizer_type="fsq", fsq_levels=[2, 2], num_vq_embeddings=4,
                                   shared_codebook=True).build(4), ValueError, "residual"),
        (lambda: VQVAEModel(**tiny_vq_config(quantizer_type="residual", quantizer_depth=0)), ValueError, "`depth`"),
    ],
)  # fmt: skip
def test_bad_settings_refused(make, error, message):
    with pytest.raises(error, match=message):
        make()


@pytest.mark.parametrize(
    "codes, error, message",
    [
        (torch.zeros(1, 4, 4, dtype=torch.long), ValueError, r"\(batch, 2, height, width\)"),
        (torch.zeros(1, 3, 4, 4, dtype=torch.long), ValueError, r"\(batch, 2, height, width\)"),
        (torch.zeros(1, 2, 0, 4, dtype=torch.long), ValueError, "non-empty"),
        (torch.zeros(1, 2, 4, 4), TypeError, "integer"),
        (torch.full((1, 2, 4, 4), 32), ValueError, r"\[0, 31\]"),
        (torch.full((1, 2, 4, 4), -1), ValueError, r"\[0, 31\]"),
        ([[0]], TypeError, "torch.Tensor"),
    ],
)
def test_wrong_codes_refused_by_detokenize(codes, error, message):
    model = VQVAEModel(**tiny_vq_config(**RESIDUAL_CONFIG)).eval()
    with pytest.raises(error, match=message):
        model.detokenize(codes)


def test_partial_decodes_are_checked_and_only_for_residual_tokenizers():
    model = VQVAEModel(**tiny_vq_config(**RESIDUAL_CONFIG)).eval()
    codes = model.tokenize(torch.rand(1, 3, 16, 16) * 2 - 1)
    assert model.detokenize(codes, depths=1).shape == (1, 3, 16, 16)
    assert torch.equal(model.detokenize(codes, depths=2), model.detokenize(codes))
    with pytest.raises(ValueError, match="at most the quantizer's depth 2"):
        model.detokenize(codes, depths=3)
    with pytest.raises(ValueError, match="`depths` is for a residual quantizer"):
        VQVAEModel(**tiny_vq_config()).eval().detokenize(codes[:, 0], depths=1)


# ------------------------------------------------------------------------------------------------ the tokenizer


def test_tokenizer_codes_have_a_depth_axis_and_forward_logs_each_depth():
    from vq_hub.code_levels import forward_statistics

    model = VQVAEModel(**tiny_vq_config(quantizer_type="residual", quantizer_depth=3, shared_codebook=True))
    assert model.code_depth == 3 and code_depths(model) == (3,) and code_depth(model.quantize) == 3
    assert VQVAEModel(**tiny_vq_config()).code_depth == 1
    images = torch.rand(2, 3, 16, 12) * 2 - 1
    output = model.train()(images)
    assert output.codes.shape == (2, 3, 8, 6) and output.depth_perplexity.shape == (3,)
    figures = forward_statistics(model, output)
    assert {"depth0_perplexity", "depth2_codebook_usage", "perplexity", "dead_code_restarts"} <= set(figures)
    torch.testing.assert_close(figures["depth1_perplexity"], output.depth_perplexity[1])


def test_each_depth_is_drawn_as_a_codebook_of_its_own():
    model = VQVAEModel(**tiny_vq_config(**RESIDUAL_CONFIG)).eval()
    views = level_views(model)
    assert list(views) == ["depth0", "depth1"] and all(isinstance(view, DepthView) for view in views.values())
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    codes = model.tokenize(images)
    assert torch.equal(views["depth1"].tokenize(images), codes[:, 1])
    # A depth-0 code decodes alone (the later depth left out); a depth-1 code over the black image's depth-0 code.
    grid = codes[:, 0]
    assert torch.equal(views["depth0"].detokenize(grid), model.detokenize(codes, depths=1))
    blank = views["depth1"]._blank_codes()[0]
    full = torch.stack([torch.full_like(grid, blank), codes[:, 1]], dim=1)
    assert torch.equal(views["depth1"].detokenize(codes[:, 1]), model.detokenize(full))


def test_bf16_autocast_and_a_bf16_model_keep_the_token_api_consistent():
    model = VQVAEModel(**tiny_vq_config(**RESIDUAL_CONFIG, codebook_dim=2)).eval()
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        latents = model.encode(images).latents
        expected = model.quantize.latents_to_codes(latents)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the quantizer's search stays float32
            assert torch.equal(model.quantize.latents_to_codes(latents), expected)
            assert model(images).codes.shape == expected.shape
        model = model.to(torch.bfloat16)
        output = model(images.bfloat16())
        codes = model.tokenize(images.bfloat16())
        assert torch.equal(codes, output.codes) and torch.equal(model.detokenize(codes), output.sample)


LOAD_IN_A_FRESH_PROCESS = """
import sys, torch
from vq_hub import VQVAEModel
model = VQVAEModel.from_pretrained(sys.argv[1]).eval()
images = torch.load(sys.argv[2])
with torch.no_grad():
    codes = model.tokenize(images)
    torch.save({"codes": codes, "images": model.detokenize(codes), "type": type(model.quantize).__name__}, sys.argv[3])
"""


def test_saved_tokenizer_loads_in_a_fresh_process_with_the_same_codes_and_images(tmp_path):
    model = VQVAEModel(**tiny_vq_config(**RESIDUAL_CONFIG, use_ema=True, kmeans_init=True)).train()
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    model(images)  # k-means init and an EMA step: state that must travel
    model.eval().save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["quantizer_type"] == "residual" and config["quantizer_depth"] == 2
    torch.save(images, tmp_path / "images.pt")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", LOAD_IN_A_FRESH_PROCESS, str(tmp_path / "model"), str(tmp_path / "images.pt"),
                    str(tmp_path / "out.pt")], check=True, env=env, timeout=300)  # fmt: skip
    loaded = torch.load(tmp_path / "out.pt")
    with torch.no_grad():
        codes = model.tokenize(images)
        assert loaded["type"] == "ResidualQuantizer" and torch.equal(loaded["codes"], codes)
        assert torch.equal(loaded["images"], model.detokenize(codes))


# ------------------------------------------------------------------------------------------------ two processes


def _make_distributed_quantizer() -> ResidualQuantizer:
    torch.manual_seed(0)
    return ResidualQuantizer(16, 4, depth=2, use_ema=True, decay=0.5, dead_code_threshold=0.6).train()


def _full_batch() -> torch.Tensor:
    return torch.randn(8, 4, 4, 4, generator=torch.Generator().manual_seed(1))


def _worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        quantizer = _make_distributed_quantizer()
        torch.manual_seed(100 + rank)  # ranks draw different restart candidates; rank 0's must win
        shard = _full_batch().chunk(world_size)[rank]
        statistics = []
        for _ in range(3):
            output = quantizer(shard)
            statistics.append([output.perplexity, output.codebook_usage, output.depth_perplexity,
                               output.depth_codebook_usage])  # fmt: skip
        torch.manual_seed(0)
        shared = ResidualQuantizer(16, 4, depth=2, shared_codebook=True).train()
        shared_output = shared(shard)
        torch.save({"statistics": statistics, "state": quantizer.state_dict(),
                    "shared": [shared_output.perplexity, shared_output.codebook_usage]},
                   os.path.join(out_dir, f"rank{rank}.pt"))  # fmt: skip
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_see_the_statistics_of_the_whole_batch_at_every_depth(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    reference = _make_distributed_quantizer()
    first = reference(_full_batch())
    torch.manual_seed(0)
    shared = ResidualQuantizer(16, 4, depth=2, shared_codebook=True).train()(_full_batch())
    for rank in ranks:
        perplexity, usage, depth_perplexity, depth_usage = rank["statistics"][0]
        torch.testing.assert_close(perplexity, first.perplexity)
        torch.testing.assert_close(usage, first.codebook_usage)
        torch.testing.assert_close(depth_perplexity, first.depth_perplexity)
        torch.testing.assert_close(depth_usage, first.depth_codebook_usage)
        torch.testing.assert_close(rank["shared"][0], shared.perplexity)  # pooled over depths and processes
        torch.testing.assert_close(rank["shared"][1], shared.codebook_usage)
    assert int(ranks[0]["state"]["depth_quantizers.1.num_restarts"]) > 0
    for key, value in ranks[0]["state"].items():  # restarts and EMA kept one set of codebooks on both ranks
        assert torch.equal(value, ranks[1]["state"][key]), key


# ------------------------------------------------------------------------------------------------ training


@pytest.mark.slow
def test_train_vqgan_trains_a_residual_tokenizer_from_its_flags(synthetic_parquet, tmp_path):
    from test_train_vqgan import TINY_MODEL, data_args

    output = tmp_path / "residual"
    summary = load_example("train_vqgan").main(data_args(synthetic_parquet) + TINY_MODEL + [
        "--output_dir", str(output), "--max_train_steps", "3", "--vqvae", "--quantizer_type", "residual",
        "--quantizer_depth", "3", "--shared_codebook", "--num_vq_embeddings", "16", "--validation_steps", "3",
        "--checkpointing_steps", "1000", "--learning_rate", "1e-3",
    ])  # fmt: skip
    assert summary["steps"] == 3 and 0 < summary["validation"]["codebook_usage"] <= 1
    assert summary["validation"]["perplexity"] <= 16
    logged = json.loads((output / "training_summary.json").read_text())
    assert "depth2_perplexity" in logged["history"][-1]
    model = VQVAEModel.from_pretrained(output).eval()
    assert model.config.quantizer_depth == 3 and model.quantize.shared_codebook
    codes = model.tokenize(torch.rand(2, 3, 16, 16) * 2 - 1)
    assert codes.shape == (2, 3, 8, 8) and int(codes.max()) < 16
    for depth in range(3):
        assert (output / "validation" / f"codebook-depth{depth}.png").is_file()
