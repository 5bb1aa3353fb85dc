"""Discrete diffusion: the scheduler's corruption and respacing, the denoising loss, and VQDiscreteDiffusionPipeline."""

import numpy as np
import pytest
import torch
from conftest import saved_model_index, tiny_vq_config
from PIL import Image
from transformers import AutoModelForMaskedLM, BertForMaskedLM

from vq_hub import (
    DiscreteDiffusionScheduler, VQAutoregressivePipeline, VQDiscreteDiffusionPipeline, VQVAEModel, VQPipeline, denoiser_config,
)  # fmt: skip
from vq_hub.data import save_gif
from vq_hub.models.priors import denoising_loss

CODEBOOK, CLASSES, GRID = 16, 3, 4
MASK_ID = CODEBOOK + 1 + CLASSES


def make_scheduler(corruption: str, num_train_timesteps: int = 100, codebook_size: int = CODEBOOK, **kwargs):
    mask_id = max(MASK_ID, codebook_size + 4)
    return DiscreteDiffusionScheduler(num_train_timesteps, codebook_size, corruption, mask_token_id=mask_id, **kwargs)


def tiny_pipeline(corruption: str = "mask", seed: int = 0, num_train_timesteps: int = 100) -> VQDiscreteDiffusionPipeline:
    """8×8 images → 4×4 grids of 16 codes; a 2-layer BERT denoiser."""
    torch.manual_seed(seed)
    vqvae = VQVAEModel(**tiny_vq_config(num_vq_embeddings=CODEBOOK, sample_size=8)).eval()
    config = denoiser_config(vqvae, CLASSES, hidden_size=32, num_layers=2, num_heads=2)
    scheduler = DiscreteDiffusionScheduler(
        num_train_timesteps, CODEBOOK, corruption, mask_token_id=config.mask_token_id
    )
    pipe = VQDiscreteDiffusionPipeline(vqvae, AutoModelForMaskedLM.from_config(config).eval(), scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe() -> VQDiscreteDiffusionPipeline:
    return tiny_pipeline()


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def perfect_logits(clean: torch.LongTensor, codebook_size: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(clean, codebook_size).float() * 50


# ------------------------------------------------------------------------------------------------- scheduler


@pytest.mark.parametrize("corruption", ["mask", "uniform"])
def test_add_noise_corrupts_the_scheduled_number_of_codes(corruption):
    # A huge codebook makes a uniform replacement equal to the original code practically impossible.
    scheduler = make_scheduler(corruption, codebook_size=10**6)
    timesteps = torch.tensor([0, 1, 10, 25, 50, 75, 99, 100])
    clean = torch.randint(0, 1000, (len(timesteps), 64), generator=seeded(0))
    noisy = scheduler.add_noise(clean, timesteps, generator=seeded(1))
    expected = [0, 1, 10, 24, 45, 59, 64, 64]  # round(sin(π t / 200) · 64), at least 1 for t ≥ 1
    assert scheduler.num_corrupted(timesteps, 64).tolist() == expected
    assert (noisy != clean).sum(dim=1).tolist() == expected
    if corruption == "mask":
        assert ((noisy == scheduler.config.mask_token_id) == (noisy != clean)).all()
    else:
        assert noisy.max() < 10**6
    linear = make_scheduler(corruption, schedule="linear", codebook_size=10**6)
    assert (linear.add_noise(clean, timesteps, seeded(1)) != clean).sum(dim=1).tolist() == [0, 1, 6, 16, 32, 48, 63, 64]
    assert torch.equal(scheduler.add_noise(clean, timesteps, generator=seeded(1)), noisy)


@pytest.mark.parametrize("corruption", ["mask", "uniform"])
@pytest.mark.parametrize("num_steps", [1, 3, 8, 50, 100])
def test_any_number_of_steps_walks_the_training_corruption_levels(corruption, num_steps):
    """With a perfect predictor, after each step exactly the corruption of the timestep it lands on remains, and the
    last step reaches the clean codes — the check diffusers' VQ-Diffusion scheduler fails below its 100 steps."""
    # 2^16 codes: a uniform replacement never happens to equal the clean code under these seeds (checked exactly).
    scheduler = make_scheduler(corruption, codebook_size=2**16)
    scheduler.set_timesteps(num_steps)
    timesteps = scheduler.timesteps.tolist()
    assert len(timesteps) == num_steps and timesteps[0] == 100 and timesteps == sorted(set(timesteps), reverse=True)
    clean = torch.randint(0, 2**16, (1, 64), generator=seeded(0))
    sample = scheduler.initial_codes(clean.shape, generator=seeded(1))
    assert (sample != clean).all(), "x_T corrupts every code"
    logits = perfect_logits(clean, 2**16)
    for timestep in timesteps:
        previous = scheduler.previous_timestep(timestep)
        sample = scheduler.step(logits, timestep, sample, generator=seeded(timestep), temperature=0).prev_sample
        remaining = int((sample != clean).sum())
        assert remaining == int(scheduler.num_corrupted(previous, 64)), (timestep, previous, remaining)
    assert torch.equal(sample, clean)


def test_set_timesteps_validates_num_steps():
    scheduler = make_scheduler("mask", num_train_timesteps=20)
    for bad in (0, 21, -1):
        with pytest.raises(ValueError, match=r"`num_steps` must be an integer in \[1, 20\]"):
            scheduler.set_timesteps(bad)
    for bad in (2.5, True, "4"):
        with pytest.raises(TypeError, match="`num_steps` must be an integer"):
            scheduler.set_timesteps(bad)
    scheduler.set_timesteps(np.int64(4))  # numpy and 0-d tensor integers are integers
    scheduler.set_timesteps(torch.tensor(5))
    assert scheduler.timesteps.tolist() == [20, 16, 12, 8, 4]
    with pytest.raises(ValueError, match=r"`timestep` 7 is not in the current schedule \[20, 16, 12, 8, 4\]"):
        scheduler.step(torch.zeros(1, 4, 16), 7, torch.full((1, 4), 20))
    with pytest.raises(ValueError, match="mask_token_id"):
        DiscreteDiffusionScheduler(100, 16, "mask", mask_token_id=None)
    with pytest.raises(ValueError, match="corruption"):
        DiscreteDiffusionScheduler(100, 16, "gaussian", mask_token_id=20)


@pytest.mark.parametrize("corruption", ["mask", "uniform"])
def test_step_never_changes_kept_codes(corruption):
    scheduler = make_scheduler(corruption)
    scheduler.set_timesteps(5)
    known = torch.randint(0, CODEBOOK, (3, 16), generator=seeded(0))
    keep = torch.rand(3, 16, generator=seeded(1)) < 0.5
    sample = scheduler.initial_codes(known.shape, known, keep, generator=seeded(2))
    random_logits = torch.randn(3, 16, CODEBOOK, generator=seeded(3))
    for timestep in scheduler.timesteps.tolist():
        sample = scheduler.step(random_logits, timestep, sample, generator=seeded(timestep), keep_mask=keep).prev_sample
        assert torch.equal(sample[keep], known[keep])
    assert sample.max() < CODEBOOK


def test_denoising_loss_counts_masked_positions_only_for_masking():
    clean = torch.tensor([[1, 2, 3, 4]])
    noisy = torch.tensor([[1, MASK_ID, 3, MASK_ID]])
    logits = perfect_logits(torch.tensor([[0, 2, 0, 4]]), CODEBOOK)  # right only where masked
    assert denoising_loss(logits, clean, noisy, MASK_ID) < 1e-6
    assert denoising_loss(logits, clean, noisy) > 10  # uniform noise: every position counts


# ------------------------------------------------------------------------------------------------- pipeline


@pytest.mark.parametrize("corruption", ["mask", "uniform"])
def test_denoiser_trained_on_one_grid_regenerates_it_from_noise(corruption):
    pipe = tiny_pipeline(corruption)
    scheduler, vocabulary = pipe.scheduler, pipe.vocabulary
    target = torch.randint(0, CODEBOOK, (1, GRID * GRID), generator=seeded(7))
    clean = target.expand(16, -1)
    conditions = vocabulary.condition_tokens(torch.zeros(16, dtype=torch.long), 16)
    denoiser = pipe.denoiser.train()
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=3e-3)
    for _ in range(120):
        noisy = scheduler.add_noise(clean, torch.randint(1, 101, (16,)))
        logits = denoiser(input_ids=torch.cat([conditions[:, None], noisy], dim=1)).logits[:, 1:, :CODEBOOK]
        loss = denoising_loss(logits, clean, noisy, MASK_ID if corruption == "mask" else None)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    denoiser.eval()
    for num_steps in (4, 16):
        codes = pipe(
            num_steps=num_steps, class_labels=[0, 0], temperature=0, generator=seeded(0), output_type="codes"
        ).codes
        assert torch.equal(codes.flatten(1), target.expand(2, -1)), (corruption, num_steps)


def test_seeded_sampling_reproduces_and_alias_matches(pipe):
    first = pipe(num_steps=8, batch_size=3, generator=seeded(0), output_type="codes").codes
    assert torch.equal(pipe(num_inference_steps=8, batch_size=3, generator=seeded(0), output_type="codes").codes, first)
    assert not torch.equal(pipe(num_steps=8, batch_size=3, generator=seeded(1), output_type="codes").codes, first)
    assert first.shape == (3, GRID, GRID) and first.max() < CODEBOOK
    guided = pipe(num_steps=8, class_labels=[0, 1, 2], guidance_scale=3.0, generator=seeded(0), output_type="codes")
    assert guided.codes.shape == (3, GRID, GRID)


def test_inpainting_keeps_the_known_codes(pipe):
    images = torch.rand(2, 3, 8, 8, generator=seeded(3)) * 2 - 1
    known = pipe.vqvae.tokenize(images)
    mask = torch.zeros(8, 8)
    mask[4:, 2:6] = 1  # regenerate the bottom-middle code cells
    codes = pipe(image=images, mask=mask, num_steps=6, generator=seeded(0), output_type="codes").codes
    keep = torch.ones(GRID, GRID, dtype=torch.bool)
    keep[2:, 1:3] = False
    assert torch.equal(codes[:, keep], known[:, keep])
    pil_mask = Image.fromarray((mask.numpy() * 255).astype("uint8"))
    assert torch.equal(pipe(image=images, mask=pil_mask, num_steps=6, generator=seeded(0), output_type="codes").codes,
                       codes)  # fmt: skip
    from_codes = pipe(codes=known, keep_mask=keep, num_steps=3, generator=seeded(1), output_type="codes").codes
    assert torch.equal(from_codes[:, keep], known[:, keep])


def test_intermediates_make_a_gif(pipe, tmp_path):
    seen = []
    output = pipe(num_steps=5, batch_size=2, generator=seeded(0), return_intermediates=True,
                  callback_on_step_end=lambda p, i, t, kw: seen.append((i, int(t), kw["codes"].shape)))  # fmt: skip
    assert len(output.intermediates) == 5 and len(output.intermediates[0]) == 2
    assert [step for step, _, _ in seen] == list(range(5)) and seen[0][1] == 100 and seen[0][2] == (2, GRID, GRID)
    path = save_gif(output.intermediates, tmp_path / "reverse.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == 5


def test_bad_input_raises_clearly(pipe):
    cases = [
        (dict(num_steps=0), r"num_steps.*\[1, 100\]"),
        (dict(num_steps=101), r"num_steps.*\[1, 100\]"),
        (dict(num_steps=8, num_inference_steps=9), "alias"),
        (dict(image=torch.zeros(1, 3, 8, 8), mask=torch.zeros(16, 16)), "`mask` must be"),
        (dict(image=torch.zeros(1, 3, 8, 8)), "needs a `mask`"),
        (dict(codes=torch.zeros(1, GRID, GRID, dtype=torch.long), keep_mask=torch.ones(3, 3, dtype=torch.bool)),
         "`keep_mask` must be"),
        (dict(codes=torch.full((1, GRID, GRID), CODEBOOK), keep_mask=torch.ones(GRID, GRID, dtype=torch.bool)),
         r"`codes` must lie in \[0, 15\]"),
        (dict(class_labels=[5]), r"class_labels.*\[0, 2\]"),
        (dict(output_type="latent"), "output_type"),
        (dict(temperature=float("nan")), "`temperature` must be a finite number"),
        (dict(guidance_scale=float("nan"), class_labels=[0]), "`guidance_scale` must be a finite number"),
        (dict(batch_size=2, generator=[seeded(0)] * 3), "list of 3 generators"),
        (dict(codes=torch.zeros(0, GRID, GRID, dtype=torch.long), keep_mask=torch.ones(GRID, GRID, dtype=torch.bool)),
         "empty batch"),
    ]  # fmt: skip
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            pipe(**kwargs)
    for kwargs, message in [(dict(batch_size=True), "`batch_size` must be an integer"),
                            (dict(num_steps=2.0), "`num_steps` must be an integer"),
                            (dict(generator="seed"), "generator")]:  # fmt: skip
        with pytest.raises(TypeError, match=message):
            pipe(**kwargs)


def test_one_generator_per_image_and_numpy_step_counts(pipe):
    """As in diffusers: a list of generators, one per image, and each image's noise comes from its own."""
    first = pipe(num_steps=np.int64(4), batch_size=2, generator=[seeded(1), seeded(2)], output_type="codes").codes
    again = pipe(num_steps=4, batch_size=2, generator=[seeded(1), seeded(2)], output_type="codes").codes
    other = pipe(num_steps=4, batch_size=2, generator=[seeded(1), seeded(3)], output_type="codes").codes
    assert torch.equal(first, again) and torch.equal(first[0], other[0]) and not torch.equal(first[1], other[1])


def test_round_trip_and_the_headline_call(pipe, tmp_path):
    assert saved_model_index(pipe, tmp_path / "diffusion") == {
        "_class_name": "VQDiscreteDiffusionPipeline",
        "denoiser": ["transformers", "BertForMaskedLM"],
        "scheduler": ["vq_hub", "DiscreteDiffusionScheduler"],
        "vqvae": ["vq_hub", "VQVAEModel"],
    }
    assert "num_steps=50" in (tmp_path / "diffusion" / "README.md").read_text()
    loaded = VQPipeline.from_pretrained(tmp_path / "diffusion")
    assert type(loaded) is VQDiscreteDiffusionPipeline and isinstance(loaded.denoiser, BertForMaskedLM)
    assert {k: v for k, v in loaded.scheduler.config.items() if not k.startswith("_")} == {
        k: v for k, v in pipe.scheduler.config.items() if not k.startswith("_")}  # fmt: skip
    expected, actual = pipe.denoiser.state_dict(), loaded.denoiser.state_dict()
    assert all(torch.equal(expected[key], actual[key]) for key in expected)
    loaded.set_progress_bar_config(disable=True)
    images = loaded(num_steps=50).images
    assert len(images) == 1 and images[0].size == (8, 8)
    with pytest.raises(ValueError, match="holds a VQDiscreteDiffusionPipeline"):
        VQAutoregressivePipeline.from_pretrained(tmp_path / "diffusion")
