"""VQHierarchicalPipeline: the top prior, then the bottom prior seeing the top codes as a prefix — shapes, conditioning
that is really used, inpainting at the bottom level, the progress bar over both stages, round trips and bad input."""

import io

import pytest
import torch
from conftest import saved_model_index
from test_hierarchical_vq_model import tiny_hierarchical_config
from diffusers import DiffusionPipeline
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, BertForMaskedLM, GPT2LMHeadModel

from vq_hub import (
    DiscreteDiffusionScheduler, HierarchicalVQModel, VQHierarchicalPipeline, VQPipeline, autoregressive_prior_config,
    denoiser_config,
)  # fmt: skip
from vq_hub.models.priors import CodeVocabulary, denoising_loss, next_code_loss

CLASSES = 3
PRIOR_SIZE = dict(hidden_size=32, num_layers=1, num_heads=2)


def tiny_vqvae(**overrides) -> HierarchicalVQModel:
    torch.manual_seed(0)
    return HierarchicalVQModel(**tiny_hierarchical_config(**overrides)).eval()  # 16×16 → top 4×4 (16), bottom 8×8 (32)


def tiny_pipeline(bottom: str | None = "autoregressive", vqvae: HierarchicalVQModel | None = None):
    vqvae = vqvae or tiny_vqvae()
    top_prior = AutoModelForCausalLM.from_config(autoregressive_prior_config(vqvae, CLASSES, level="top", **PRIOR_SIZE))
    bottom_prior, scheduler = None, None
    if bottom == "autoregressive":
        config = autoregressive_prior_config(vqvae, CLASSES, level="bottom", **PRIOR_SIZE)
        bottom_prior = AutoModelForCausalLM.from_config(config)
    elif bottom == "denoiser":
        bottom_prior = AutoModelForMaskedLM.from_config(denoiser_config(vqvae, CLASSES, level="bottom", **PRIOR_SIZE))
        scheduler = DiscreteDiffusionScheduler(20, 32, "mask", bottom_prior.config.mask_token_id)
    pipe = VQHierarchicalPipeline(
        vqvae=vqvae, top_prior=top_prior.eval(), bottom_prior=bottom_prior, scheduler=scheduler
    )
    if bottom_prior is not None:
        bottom_prior.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module", params=["autoregressive", "denoiser"])
def pipe(request) -> VQHierarchicalPipeline:
    return tiny_pipeline(request.param)


def test_bottom_prior_configs_hold_the_top_grid_as_a_prefix():
    vqvae = tiny_vqvae()
    config = autoregressive_prior_config(vqvae, CLASSES, level="bottom", **PRIOR_SIZE)
    assert CodeVocabulary.from_config(config) == CodeVocabulary(32, CLASSES, prefix_vocab_size=16, prefix_length=16)
    assert config.code_grid_size == [8, 8] and config.code_level == "bottom" and config.n_positions == 16 + 1 + 64
    top = autoregressive_prior_config(vqvae, CLASSES, level="top", **PRIOR_SIZE)
    assert CodeVocabulary.from_config(top) == CodeVocabulary(16, CLASSES) and top.code_grid_size == [4, 4]
    with pytest.raises(ValueError, match=r"`level` must be one of \('top', 'bottom'\)"):
        autoregressive_prior_config(vqvae, CLASSES)


def test_samples_both_grids_and_decodes_them(pipe):
    output = pipe(class_labels=[0, 1, 2], guidance_scale=2.0, generator=seeded(), output_type="codes")
    top, bottom = output.codes
    assert output.images is None and top.shape == (3, 4, 4) and bottom.shape == (3, 8, 8)
    assert top.max() < 16 and bottom.max() < 32
    images = pipe(class_labels=[0, 1, 2], guidance_scale=2.0, generator=seeded(), output_type="pt").images
    assert images.shape == (3, 3, 16, 16) and 0 <= float(images.min()) and float(images.max()) <= 1
    with torch.no_grad():
        expected = ((pipe.vqvae.detokenize((top, bottom)).clamp(-1, 1) + 1) / 2).clamp(0, 1)
    assert torch.allclose(images, expected, atol=1e-6), "the images are the decodes of the sampled codes"
    again = pipe(class_labels=[0, 1, 2], guidance_scale=2.0, generator=seeded(), output_type="codes").codes
    assert torch.equal(again[0], top) and torch.equal(again[1], bottom)


def test_the_bottom_prior_sees_the_top_codes_as_its_prefix(pipe):
    """Every call of the bottom prior starts with the top codes in the prefix vocabulary, attended to."""
    seen = []
    hook = pipe.bottom_prior.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((kwargs["input_ids"], kwargs["attention_mask"])), with_kwargs=True
    )
    top = torch.randint(0, 16, (2, 4, 4), generator=seeded(1))
    try:
        codes = pipe(top_codes=top, class_labels=[0, 1], guidance_scale=2.0, generator=seeded(5), output_type="codes",
                     num_steps=4 if pipe.bottom_is_denoiser else None).codes  # fmt: skip
    finally:
        hook.remove()
    assert torch.equal(codes[0], top), "given top codes are kept"
    vocabulary = pipe.bottom_vocabulary
    input_ids, attention_mask = seen[0]  # the first call holds the whole prefix (later AR calls use the KV cache)
    prefix = top.flatten(1) + vocabulary.prefix_offset
    assert torch.equal(input_ids[:, :16], torch.cat([prefix, prefix])), "conditional and unconditional rows"
    assert torch.equal(input_ids[:, 16], torch.tensor([33, 34, 32, 32])), "class tokens, then the null class"
    assert bool(attention_mask[:, :17].all())


def bottom_of(top: torch.LongTensor) -> torch.LongTensor:
    """The toy rule of the conditioning test: a top grid filled with t has a bottom grid filled with 2t + 1."""
    return (2 * top[:, :1, :1] + 1).expand(-1, 8, 8)


def train_bottom_prior_to_follow_the_top(kind: str) -> VQHierarchicalPipeline:
    """A bottom prior taught `bottom_of`: the bottom grid is a function of the top one, so a prior that ignored its
    prefix could not do better than one right grid in four."""
    pipe = tiny_pipeline(kind, vqvae=tiny_vqvae(top_quantizer=dict(num_vq_embeddings=4)))
    prior, vocabulary = pipe.bottom_prior.train(), pipe.bottom_vocabulary
    optimizer = torch.optim.Adam(prior.parameters(), lr=1e-2)
    generator = seeded(0)
    for _ in range(60):
        top = torch.randint(0, 4, (16, 1, 1), generator=generator).expand(-1, 4, 4)
        bottom = bottom_of(top).flatten(1)
        start, mask = vocabulary.start_tokens(vocabulary.condition_tokens(None, 16), top.flatten(1))
        if kind == "autoregressive":
            tokens = torch.cat([start, bottom], dim=1)
            logits = prior(input_ids=tokens, attention_mask=torch.cat([mask, torch.ones_like(bottom)], 1)).logits
            loss = next_code_loss(logits, tokens, 32, prefix_length=vocabulary.prefix_length)
        else:
            timesteps = torch.randint(1, 21, (16,), generator=generator)
            noisy = pipe.scheduler.add_noise(bottom, timesteps, generator=generator)
            tokens = torch.cat([start, noisy], dim=1)
            logits = prior(input_ids=tokens, attention_mask=torch.cat([mask, torch.ones_like(noisy)], 1)).logits
            loss = denoising_loss(logits[:, start.shape[1] :, :32], bottom, noisy, vocabulary.mask_token_id)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    prior.eval()
    return pipe


@pytest.mark.parametrize("kind", ["autoregressive", "denoiser"])
def test_a_trained_bottom_prior_follows_the_top_codes_it_is_given(kind):
    pipe = train_bottom_prior_to_follow_the_top(kind)
    top = torch.arange(4)[:, None, None].expand(-1, 4, 4)
    bottom = pipe(top_codes=top, temperature=0, num_steps=10 if kind == "denoiser" else None,
                  output_type="codes").codes[1]  # fmt: skip
    assert torch.equal(bottom, bottom_of(top)), "changing the top codes changes the bottom codes as taught"


def test_inpainting_at_the_bottom_level_keeps_the_top_and_the_unmasked_cells(pipe):
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 8:] = 1  # regenerate the lower half: the last 4 of 8 bottom rows
    kwargs = {"num_steps": 5} if pipe.bottom_is_denoiser else {}
    top, bottom = pipe(image=images, mask=mask, class_labels=[0, 1], generator=seeded(), output_type="codes",
                       **kwargs).codes  # fmt: skip
    with torch.no_grad():
        known_top, known_bottom = pipe.vqvae.tokenize(images)
    assert torch.equal(top, known_top) and torch.equal(bottom[:, :4], known_bottom[:, :4])
    keep = torch.ones(8, 8, dtype=torch.bool)
    keep[2:5, 3:6] = False  # a hole in the middle: only a denoiser can fill it
    if pipe.bottom_is_denoiser:
        filled = pipe(codes=(known_top, known_bottom), keep_mask=keep, num_steps=5, output_type="codes").codes[1]
        assert torch.equal(filled[:, keep], known_bottom[:, keep])
    else:
        with pytest.raises(ValueError, match="raster order"):
            pipe(codes=(known_top, known_bottom), keep_mask=keep, output_type="codes")


def test_one_progress_bar_runs_over_both_stages(pipe):
    stream, stages = io.StringIO(), []
    pipe.set_progress_bar_config(file=stream, disable=False, ncols=80)
    try:
        pipe(batch_size=1, num_steps=5 if pipe.bottom_is_denoiser else None, output_type="codes",
             callback_on_step_end=lambda p, step, position, values: stages.append(values["stage"]))  # fmt: skip
    finally:
        pipe.set_progress_bar_config(disable=True)
    bottom_steps = 5 if pipe.bottom_is_denoiser else 64
    assert stages == ["top"] * 16 + ["bottom"] * bottom_steps
    total = 16 + bottom_steps
    assert f"{total}/{total}" in stream.getvalue()


def test_a_pipeline_without_bottom_prior_samples_top_codes_and_decodes_them_alone():
    pipe = tiny_pipeline(bottom=None)
    output = pipe(class_labels=[2, 0], generator=seeded(), output_type="pt")
    top, bottom = output.codes
    assert top.shape == (2, 4, 4) and bottom is None
    with torch.no_grad():
        expected = ((pipe.vqvae.detokenize_top(top).clamp(-1, 1) + 1) / 2).clamp(0, 1)
    assert torch.allclose(output.images, expected, atol=1e-6)


def test_save_and_load_round_trip_pins_model_index(tmp_path):
    pipe = tiny_pipeline("autoregressive")
    assert saved_model_index(pipe, tmp_path / "pipe") == {
        "_class_name": "VQHierarchicalPipeline",
        "bottom_prior": ["transformers", "GPT2LMHeadModel"],
        "scheduler": [None, None],
        "top_prior": ["transformers", "GPT2LMHeadModel"],
        "vqvae": ["vq_hub", "HierarchicalVQModel"],
    }
    card = (tmp_path / "pipe" / "README.md").read_text()
    assert "VQHierarchicalPipeline" in card and "16×16 images" in card
    loaded = VQPipeline.from_pretrained(tmp_path / "pipe")
    assert type(loaded) is VQHierarchicalPipeline and isinstance(loaded.bottom_prior, GPT2LMHeadModel)
    for name in ("vqvae", "top_prior", "bottom_prior"):
        expected, actual = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected), name
    loaded.set_progress_bar_config(disable=True)
    first = pipe(class_labels=[0, 1], generator=seeded(3), output_type="codes").codes
    second = loaded(class_labels=[0, 1], generator=seeded(3), output_type="codes").codes
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert type(DiffusionPipeline.from_pretrained(tmp_path / "pipe")) is VQHierarchicalPipeline  # diffusers' own loader


def test_a_denoiser_pipeline_round_trips_with_its_scheduler(tmp_path):
    pipe = tiny_pipeline("denoiser")
    index = saved_model_index(pipe, tmp_path / "pipe")
    assert index["bottom_prior"] == ["transformers", "BertForMaskedLM"]
    assert index["scheduler"] == ["vq_hub", "DiscreteDiffusionScheduler"]
    loaded = VQPipeline.from_pretrained(tmp_path / "pipe")
    assert isinstance(loaded.bottom_prior, BertForMaskedLM) and loaded.bottom_is_denoiser
    loaded.set_progress_bar_config(disable=True)
    first = pipe(class_labels=[0], num_steps=4, generator=seeded(3), output_type="codes").codes
    second = loaded(class_labels=[0], num_steps=4, generator=seeded(3), output_type="codes").codes
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_bad_input_raises_clearly():
    pipe = tiny_pipeline("autoregressive")
    cases = [
        (dict(num_steps=10), TypeError, "applies to a denoiser bottom prior"),
        (dict(top_codes=torch.zeros(1, 8, 8, dtype=torch.long)), ValueError, r"\(B, 4, 4\)"),
        (dict(top_codes=torch.full((1, 4, 4), 16)), ValueError, r"top_codes.*\[0, 15\]"),
        (dict(top_codes=torch.zeros(1, 4, 4, dtype=torch.long), image=torch.zeros(1, 3, 16, 16)), ValueError,
         "at most one of"),
        (dict(image=torch.zeros(1, 3, 16, 16)), ValueError, "needs a `mask`"),
        (dict(codes=(torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 8, 8, dtype=torch.long))), ValueError,
         "needs a `keep_mask`"),
        (dict(class_labels=[3]), ValueError, r"class_labels.*\[0, 2\]"),
        (dict(output_type="latent"), ValueError, "output_type"),
    ]  # fmt: skip
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            pipe(**kwargs)


def test_priors_that_do_not_fit_the_tokenizer_are_refused_when_the_pipeline_is_built():
    vqvae = tiny_vqvae()
    top = AutoModelForCausalLM.from_config(autoregressive_prior_config(vqvae, CLASSES, level="top", **PRIOR_SIZE))
    unconditioned = AutoModelForCausalLM.from_config(autoregressive_prior_config(
        vqvae, CLASSES, level="bottom", prefix_vocab_size=5, prefix_length=3, **PRIOR_SIZE))  # fmt: skip
    denoiser = AutoModelForMaskedLM.from_config(denoiser_config(vqvae, CLASSES, level="bottom", **PRIOR_SIZE))
    bottom = AutoModelForCausalLM.from_config(autoregressive_prior_config(vqvae, CLASSES, level="bottom", **PRIOR_SIZE))
    scheduler = DiscreteDiffusionScheduler(20, 32, "mask", denoiser.config.mask_token_id)
    with pytest.raises(ValueError, match="prefix of the 4×4 top codes"):
        VQHierarchicalPipeline(vqvae=vqvae, top_prior=top, bottom_prior=unconditioned)
    with pytest.raises(ValueError, match="model the 16 top codes"):
        VQHierarchicalPipeline(vqvae=vqvae, top_prior=bottom, bottom_prior=bottom)
    with pytest.raises(ValueError, match="give the `scheduler`"):
        VQHierarchicalPipeline(vqvae=vqvae, top_prior=top, bottom_prior=denoiser)
    with pytest.raises(ValueError, match="applies to a denoiser"):
        VQHierarchicalPipeline(vqvae=vqvae, top_prior=top, bottom_prior=bottom, scheduler=scheduler)
    with pytest.raises(TypeError, match="HierarchicalVQModel"):
        from conftest import tiny_vq_config

        from vq_hub import VQVAEModel

        VQHierarchicalPipeline(vqvae=VQVAEModel(**tiny_vq_config()), top_prior=top)
