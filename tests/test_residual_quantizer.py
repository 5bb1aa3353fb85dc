"""The residual quantizer (RQ-VAE): hand-checked codes and losses, straight-through gradients, statistics per depth
and across processes, float32 under autocast, refused bad input, and the `(B, depth, h, w)` codes of a tokenizer
through save/load and a training run."""

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import load_example, tiny_vq_config

from vq_hub import ResidualQuantizer, VQVAEModel
from vq_hub.code_levels import (
    DepthView, code_depth, code_depths, codebook_counts, level_views, usage_and_perplexity,
)  # fmt: skip
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
    figures = usage_and_perplexity(quantizer, counts)  # what the evaluations report, from the codes alone
    assert figures["perplexity"] == pytest.approx(float(output.perplexity))
    assert figures["depth1_codebook_usage"] == pytest.approx(2 / 3)


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
    counts = codebook_counts(quantizer, output.codes)
    assert counts.tolist() == [[0.0, 2.0, 1.0], [2.0, 0.0, 1.0]]
    assert usage_and_perplexity(quantizer, counts)["perplexity"] == pytest.approx(3.0)
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


# ------------------------------------------------------------------------------------------------ priors and codec


def tiny_residual_tokenizer(depth: int = 2) -> VQVAEModel:
    """8×8 images → 4×4 grids of `depth` codes from 32-code codebooks."""
    torch.manual_seed(0)
    return VQVAEModel(**tiny_vq_config(sample_size=8, quantizer_type="residual", quantizer_depth=depth)).eval()


def tiny_autoregressive_pipeline(vqvae=None):
    from transformers import AutoModelForCausalLM

    from vq_hub import VQAutoregressivePipeline, autoregressive_prior_config

    vqvae = vqvae or tiny_residual_tokenizer()
    config = autoregressive_prior_config(vqvae, 2, hidden_size=32, num_layers=1, num_heads=2)
    pipe = VQAutoregressivePipeline(vqvae=vqvae, prior=AutoModelForCausalLM.from_config(config).eval())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_sequence_order_is_position_major_depth_minor_and_inverts():
    from vq_hub.code_levels import cells_to_sequence, codes_to_sequence, sequence_to_codes

    codes = torch.arange(2 * 3 * 2 * 2).reshape(2, 3, 2, 2)  # (B, depth 3, 2×2)
    sequence = codes_to_sequence(codes)
    # Cell (0, 0) at depths 0, 1, 2, then cell (0, 1)…
    assert sequence[0, :6].tolist() == [0, 4, 8, 1, 5, 9]
    assert codes_to_sequence(codes, "depth-major")[0, :6].tolist() == [0, 1, 2, 3, 4, 5]
    for order in ("position-major", "depth-major"):
        assert torch.equal(sequence_to_codes(codes_to_sequence(codes, order), (2, 2), 3, order), codes)
    assert torch.equal(sequence_to_codes(codes[:, 0].flatten(1), (2, 2)), codes[:, 0])  # one code per cell
    cells = torch.tensor([[[True, False], [False, True]]])
    assert cells_to_sequence(cells, 2).tolist() == [[True, True, False, False, False, False, True, True]]
    with pytest.raises(ValueError, match=r"\(B, 12\)"):
        sequence_to_codes(sequence[:, :-1], (2, 2), 3)
    with pytest.raises(ValueError, match="`order`"):
        codes_to_sequence(codes, "scale-major")


def test_autoregressive_pipeline_samples_and_completes_residual_codes():
    pipe = tiny_autoregressive_pipeline()
    assert pipe.code_depth == 2 and pipe.num_codes == 32 and pipe.prior.config.code_depth == 2
    assert pipe.prior.config.max_position_embeddings == 1 + 32
    codes = pipe(class_labels=[0, 1], output_type="codes", generator=torch.Generator().manual_seed(0)).codes
    assert codes.shape == (2, 2, 4, 4) and int(codes.max()) < 32
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    known = pipe.encode_images(images)
    completed = pipe(image=images, num_prefix_rows=1, output_type="codes", generator=torch.Generator().manual_seed(2))
    assert torch.equal(completed.codes[:, :, :1], known[:, :, :1])  # every depth of the first row kept
    from_rows = pipe(prefix_codes=known[:, :, :2], output_type="codes", temperature=0).codes
    assert torch.equal(from_rows[:, :, :2], known[:, :, :2])
    with pytest.raises(ValueError, match=r"\(B, 2, rows, 4\)"):
        pipe(prefix_codes=known[:, :1, :2], output_type="codes")
    output = pipe(batch_size=1, output_type="pt", generator=torch.Generator().manual_seed(3))
    assert output.images.shape == (1, 3, 8, 8)


def test_a_prior_of_another_depth_is_refused():
    from transformers import AutoModelForCausalLM

    from vq_hub import VQAutoregressivePipeline, autoregressive_prior_config

    one_code = VQVAEModel(**tiny_vq_config(sample_size=8)).eval()
    prior = AutoModelForCausalLM.from_config(autoregressive_prior_config(one_code, hidden_size=32, num_layers=1,
                                                                         num_heads=2))  # fmt: skip
    with pytest.raises(ValueError, match="1 code\\(s\\) per position .* the tokenizer gives 2"):
        VQAutoregressivePipeline(vqvae=tiny_residual_tokenizer(), prior=prior)


def test_codec_round_trips_residual_codes_and_refuses_crafted_depths():
    import struct
    import zlib

    from vq_hub.code_levels import codes_to_sequence
    from vq_hub.codec import compress_codes, compress_images, decompress_codes, decompress_images, read_header

    pipe = tiny_autoregressive_pipeline()
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(4)) * 2 - 1
    data = compress_images(pipe, images, class_labels=[0, 1, -1])
    header = read_header(data)
    assert header.code_depth == 2 and header.grid_size == (4, 4) and data[4:6] == struct.pack("<H", 2)
    output = decompress_images(pipe, data, output_type="pt")
    assert torch.equal(output.codes, pipe.encode_images(images)) and output.class_labels.tolist() == [0, 1, -1]
    assert torch.equal(output.images, pipe.decode_codes(output.codes, "pt"))
    codes = output.codes.flip(1)  # other grids: depth 1's codes at depth 0 and the reverse
    assert torch.equal(decompress_codes(pipe, compress_codes(pipe, codes)).codes, codes)
    sequence = codes_to_sequence(codes)  # the prior's order is also accepted
    assert compress_codes(pipe, sequence) == compress_codes(pipe, codes)
    with pytest.raises(ValueError, match=r"\(N, 2, 4, 4\)"):
        compress_codes(pipe, codes[:, 0])

    def rewritten(offset: int, value: bytes) -> bytes:
        body = bytearray(data[:-4])
        body[offset : offset + len(value)] = value
        return bytes(body) + struct.pack("<I", zlib.crc32(body))

    with pytest.raises(ValueError, match="do not fit"):  # the depth after the grid width (offset 44)
        decompress_codes(pipe, rewritten(44, struct.pack("<H", 3)))
    with pytest.raises(ValueError, match="code depth 1"):
        decompress_codes(pipe, rewritten(44, struct.pack("<H", 1)))
    with pytest.raises(ValueError, match="damaged"):  # a version-1 reading of a version-2 file
        decompress_codes(pipe, rewritten(4, struct.pack("<H", 1)))


def test_diffusion_pipeline_samples_and_inpaints_residual_codes():
    from transformers import AutoModelForMaskedLM

    from vq_hub import DiscreteDiffusionScheduler, VQDiscreteDiffusionPipeline, denoiser_config

    vqvae = tiny_residual_tokenizer()
    config = denoiser_config(vqvae, 2, hidden_size=32, num_layers=1, num_heads=2)
    assert config.code_depth == 2 and config.max_position_embeddings == 1 + 32
    scheduler = DiscreteDiffusionScheduler(10, 32, "mask", mask_token_id=config.mask_token_id)
    pipe = VQDiscreteDiffusionPipeline(vqvae, AutoModelForMaskedLM.from_config(config).eval(), scheduler)
    pipe.set_progress_bar_config(disable=True)
    sampled = pipe(class_labels=[1], num_steps=4, output_type="codes", return_intermediates=True)
    assert sampled.codes.shape == (1, 2, 4, 4) and int(sampled.codes.max()) < 32 and len(sampled.intermediates) == 4
    known = sampled.codes
    keep = torch.zeros(4, 4, dtype=torch.bool)
    keep[:2] = True  # the top half of the cells, all their depths
    inpainted = pipe(codes=known, keep_mask=keep, num_steps=4, output_type="codes",
                     generator=torch.Generator().manual_seed(5)).codes  # fmt: skip
    assert torch.equal(inpainted[:, :, :2], known[:, :, :2])
    with pytest.raises(ValueError, match=r"\(B, 2, 4, 4\)"):
        pipe(codes=known[:, 0], keep_mask=keep, num_steps=4)
    images = torch.rand(1, 3, 8, 8) * 2 - 1
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 4:, :] = 1  # regenerate the bottom half
    from_image = pipe(image=images, mask=mask, num_steps=4, output_type="codes").codes
    assert torch.equal(from_image[:, :, :2], pipe.encode_images(images)[:, :, :2])


@pytest.mark.slow
def test_encoded_residual_codes_train_both_priors_into_pipelines(synthetic_parquet, tmp_path):
    import pyarrow.parquet as pq
    from conftest import run_script
    from test_train_priors import TINY_PRIOR

    from vq_hub import VQPipeline
    from vq_hub.code_levels import codes_to_sequence
    from vq_hub.data import image_to_tensor, load_parquet_images

    torch.manual_seed(0)
    VQVAEModel(**tiny_vq_config(sample_size=16, **RESIDUAL_CONFIG)).save_pretrained(tmp_path / "tokenizer")
    run_script("encode_dataset.py", [
        "--vqvae_name_or_path", str(tmp_path / "tokenizer"), "--train_parquet", str(synthetic_parquet / "train.parquet"),
        "--validation_parquet", str(synthetic_parquet / "test.parquet"), "--output_dir", str(tmp_path / "codes"),
    ])  # fmt: skip
    info = json.loads((tmp_path / "codes" / "encoding.json").read_text())
    assert info["code_depth"] == 2 and info["code_order"] == "position-major" and info["code_grid_size"] == [8, 8]
    tokenizer = VQVAEModel.from_pretrained(tmp_path / "tokenizer").eval()
    images = torch.stack([image_to_tensor(image, 16, 3) for image in
                          load_parquet_images(synthetic_parquet / "test.parquet")["image"]])  # fmt: skip
    stored = torch.tensor(pq.read_table(tmp_path / "codes" / "validation.parquet")["codes"].to_pylist())
    assert torch.equal(stored, codes_to_sequence(tokenizer.tokenize(images)))  # rows in the prior's order
    run_script("encode_dataset.py", [  # sharded (resumable) encoding: the same rows, the same order, the same info
        "--vqvae_name_or_path", str(tmp_path / "tokenizer"), "--train_parquet", str(synthetic_parquet / "train.parquet"),
        "--validation_parquet", str(synthetic_parquet / "test.parquet"), "--output_dir", str(tmp_path / "shards"),
        "--chunk_size", "10",
    ])  # fmt: skip
    sharded = json.loads((tmp_path / "shards" / "encoding.json").read_text())
    assert (sharded["code_depth"], sharded["code_order"]) == (2, "position-major")
    shards = [tmp_path / "shards" / name for name in sharded["shards"]["validation"]]
    assert torch.equal(torch.tensor(pq.read_table(shards)["codes"].to_pylist()), stored)

    for script, extra in (("train_prior.py", []), ("train_diffusion.py", ["--num_steps", "2"])):
        output = tmp_path / script
        run_script(script, TINY_PRIOR + [
            "--codes_dir", str(tmp_path / "codes"), "--output_dir", str(output), "--max_train_steps", "3",
            "--validation_steps", "3", "--checkpointing_steps", "1000", *extra,
        ])  # fmt: skip
        pipe = VQPipeline.from_pretrained(output)
        pipe.set_progress_bar_config(disable=True)
        assert pipe.code_depth == 2 and pipe.prior_config.max_position_embeddings == 1 + 8 * 8 * 2
        options = {"num_steps": 2} if script == "train_diffusion.py" else {}
        codes = pipe(class_labels=[0, 2], output_type="codes", **options).codes
        assert codes.shape == (2, 2, 8, 8) and int(codes.max()) < 32
