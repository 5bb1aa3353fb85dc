"""The cross-attention text-to-image pipelines (Parti / MUSE style): tiny random T5 and CLIP text encoders as
components, prompts or precomputed states, guidance against the empty prompt, the KV cache, completion and
inpainting, saving and loading through vq_hub and diffusers, and a prior that learns two captions by cross-attention."""

import pytest
import torch
from conftest import saved_model_index, tiny_vq_config
from diffusers import DiffusionPipeline
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

from vq_hub import (
    DiscreteDiffusionScheduler, VQAutoregressiveTextEncoderPipeline, VQDiscreteDiffusionTextEncoderPipeline,
    VQPipeline, VQVAEModel, autoregressive_prior_config, cross_attention_denoiser_config, cross_attention_prior_config,
)  # fmt: skip
from vq_hub.models.cross_attention import bidirectional_attention_mask
from vq_hub.models.priors import denoising_loss, next_code_loss
from vq_hub.text import train_caption_tokenizer
from vq_hub.text_encoders import make_text_encoder, tokenize_for_encoder

CODEBOOK = 16
CAPTIONS = ["a red sneaker to the left of a blue bag", "a blue bag on the right", "green trousers on the left",
            "a red t-shirt to the right of a green dress"]  # fmt: skip
TWO = ["a red sneaker to the left of a blue bag", "green trousers on the left"]
ENCODERS = {"t5": "T5EncoderModel", "clip_text_model": "CLIPTextModel"}


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_parts(encoder_type: str, seed: int = 0):
    torch.manual_seed(seed)
    vqvae = VQVAEModel(**tiny_vq_config(num_vq_embeddings=CODEBOOK, sample_size=[8, 16])).eval()  # 4×8 grids
    tokenizer = train_caption_tokenizer(CAPTIONS)
    encoder = make_text_encoder(encoder_type, len(tokenizer), hidden_size=32, num_layers=1, num_heads=2,
                                max_length=tokenizer.model_max_length).eval()  # fmt: skip
    return vqvae, tokenizer, encoder


def tiny_autoregressive(encoder_type: str = "t5", seed: int = 0) -> VQAutoregressiveTextEncoderPipeline:
    vqvae, tokenizer, encoder = tiny_parts(encoder_type, seed)
    config = cross_attention_prior_config(vqvae, encoder.config, num_layers=2, num_heads=2, initializer_range=0.2)
    pipe = VQAutoregressiveTextEncoderPipeline(vqvae, encoder, tokenizer, AutoModelForCausalLM.from_config(config))
    pipe.prior.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_diffusion(encoder_type: str = "t5", seed: int = 0) -> VQDiscreteDiffusionTextEncoderPipeline:
    vqvae, tokenizer, encoder = tiny_parts(encoder_type, seed)
    config = cross_attention_denoiser_config(vqvae, encoder.config, num_layers=2, num_heads=2, initializer_range=0.2,
                                             hidden_dropout_prob=0.0)  # fmt: skip
    scheduler = DiscreteDiffusionScheduler(20, CODEBOOK, "mask", config.mask_token_id)
    denoiser = AutoModelForMaskedLM.from_config(config).eval()
    pipe = VQDiscreteDiffusionTextEncoderPipeline(vqvae, encoder, tokenizer, denoiser, scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny(kind: str, encoder_type: str = "t5", seed: int = 0):
    return (tiny_autoregressive if kind == "autoregressive" else tiny_diffusion)(encoder_type, seed)


def codes_of(pipe, **kwargs) -> torch.LongTensor:
    if isinstance(pipe, VQDiscreteDiffusionTextEncoderPipeline):
        kwargs.setdefault("num_steps", 4)
    return pipe(output_type="codes", **kwargs).codes


KINDS = ["autoregressive", "diffusion"]


# ------------------------------------------------------------------------------------------------- prompts


def test_the_empty_prompt_is_one_attended_pad_and_prompts_pad_to_the_longest():
    tokenizer = train_caption_tokenizer(CAPTIONS)
    ids, mask = tokenize_for_encoder(tokenizer, ["", "a blue bag"], 10)
    assert ids.shape == (2, 3) and mask.tolist() == [[1, 0, 0], [1, 1, 1]]
    assert ids[0, 0] == tokenizer.pad_token_id
    with pytest.raises(ValueError, match="10 tokens"):
        tokenize_for_encoder(tokenizer, [" ".join(["bag"] * 11)], 10)


@pytest.mark.parametrize("kind", KINDS)
def test_prompt_embeds_give_the_prompts_images_and_guidance_uses_the_empty_prompt(kind):
    pipe = tiny(kind)
    embeds, mask, negative, negative_mask = pipe.encode_prompt(TWO, num_images_per_prompt=2)
    assert embeds.shape[:2] == mask.shape and embeds.shape[0] == 4 and negative.shape[0] == 4
    empty, empty_mask, _, _ = pipe.encode_prompt("", do_classifier_free_guidance=False)
    assert torch.equal(negative[:1, : empty.shape[1]], empty) and int(negative_mask[0].sum()) == 1
    from_text = codes_of(pipe, prompt=TWO, num_images_per_prompt=2, generator=seeded(3))
    from_embeds = codes_of(pipe, prompt_embeds=embeds[::2], prompt_attention_mask=mask[::2], num_images_per_prompt=2,
                           generator=seeded(3))  # fmt: skip
    assert from_text.shape == (4, 4, 8) and torch.equal(from_text, from_embeds)
    # Guidance against the empty prompt equals guidance against its states given as negative_prompt_embeds.
    given = codes_of(pipe, prompt=TWO, negative_prompt_embeds=empty, negative_prompt_attention_mask=empty_mask,
                     generator=seeded(4))  # fmt: skip
    assert torch.equal(given, codes_of(pipe, prompt=TWO, generator=seeded(4)))
    assert not torch.equal(codes_of(pipe, prompt=TWO, negative_prompt="a blue bag on the right", generator=seeded(4)),
                           given)  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_bad_inputs_raise_clearly(kind):
    pipe = tiny(kind)
    with pytest.raises(ValueError, match="exactly one"):
        pipe(prompt="a blue bag", prompt_embeds=torch.zeros(1, 2, 32))
    with pytest.raises(ValueError, match=r"`prompt_embeds` must be a float tensor \(B, T, 32\)"):
        pipe(prompt_embeds=torch.zeros(1, 2, 8))
    with pytest.raises(ValueError, match="negative_prompt` must be one prompt or one per prompt"):
        pipe(prompt=TWO, negative_prompt=["a", "b", "c"])
    with pytest.raises(TypeError, match="`prompt` must be a string"):
        pipe(prompt=3)
    vqvae, tokenizer, encoder = pipe.vqvae, pipe.tokenizer, pipe.text_encoder
    prior = getattr(pipe, pipe.prior_component)
    wide = make_text_encoder("t5", len(tokenizer), hidden_size=16, num_layers=1, num_heads=2)
    components = {"vqvae": vqvae, "text_encoder": wide, "tokenizer": tokenizer, pipe.prior_component: prior}
    if kind == "diffusion":
        components["scheduler"] = pipe.scheduler
    with pytest.raises(ValueError, match="16-wide states, but the prior cross-attends to 32-wide"):
        type(pipe)(**components)
    if kind == "autoregressive":
        plain = AutoModelForCausalLM.from_config(autoregressive_prior_config(vqvae, hidden_size=32, num_layers=1,
                                                                             num_heads=2))  # fmt: skip
        with pytest.raises(ValueError, match="must cross-attend to the text"):
            VQAutoregressiveTextEncoderPipeline(vqvae, encoder, tokenizer, plain)


# ------------------------------------------------------------------------------------------------- sampling


def test_the_kv_cache_keeps_the_cross_attention_and_agrees_with_a_full_pass():
    """Greedy codes drawn with the cache (cross-attention keys cached after the first code) are each the argmax of
    one uncached forward pass over the whole sequence with the same text states."""
    pipe = tiny_autoregressive()
    codes = codes_of(pipe, prompt=TWO, temperature=0, guidance_scale=1.0).flatten(1)
    embeds, mask, _, _ = pipe.encode_prompt(TWO, do_classifier_free_guidance=False)
    tokens = torch.cat([torch.full((2, 1), pipe.vocabulary.bos_token_id), codes], dim=1)
    logits = pipe.prior(input_ids=tokens, encoder_hidden_states=embeds, encoder_attention_mask=mask).logits
    assert torch.equal(logits[:, :-1, :CODEBOOK].argmax(-1), codes)
    static = tiny_autoregressive()
    static.cache_implementation = "static"
    assert torch.equal(codes_of(static, prompt=TWO, temperature=0, guidance_scale=1.0).flatten(1), codes)


def test_the_cross_attention_denoiser_sees_the_whole_grid():
    """BERT builds cross-attention only as a decoder (causal); the full 4-D mask keeps it bidirectional: the first
    position's logits change with the last code."""
    pipe = tiny_diffusion()
    embeds, mask, _, _ = pipe.encode_prompt(TWO[:1], do_classifier_free_guidance=False)
    start, start_mask = pipe.bos_start_tokens(1)
    grid = torch.randint(0, CODEBOOK, (1, 32), generator=seeded(0))
    changed = grid.clone()
    changed[0, -1] = (changed[0, -1] + 1) % CODEBOOK
    inputs = {"encoder_hidden_states": embeds, "encoder_attention_mask": mask}
    first, second = (pipe.code_logits(start, start_mask, g, **inputs) for g in (grid, changed))
    assert not torch.allclose(first[:, 0], second[:, 0])
    assert bidirectional_attention_mask(torch.ones(2, 5), pipe.denoiser.config).shape == (2, 1, 5, 5)


def test_completion_and_inpainting_keep_the_given_codes():
    autoregressive = tiny_autoregressive()
    known = torch.randint(0, CODEBOOK, (2, 4, 8), generator=seeded(5))
    completed = codes_of(autoregressive, prompt=TWO, prefix_codes=known[:, :2], generator=seeded(1))
    assert torch.equal(completed[:, :2], known[:, :2])
    diffusion = tiny_diffusion()
    keep = torch.zeros(4, 8, dtype=torch.bool)
    keep[:, :4] = True
    inpainted = codes_of(diffusion, prompt=TWO, codes=known, keep_mask=keep, generator=seeded(1))
    assert torch.equal(inpainted[:, :, :4], known[:, :, :4])
    with pytest.raises(ValueError, match="does not match"):
        codes_of(autoregressive, prompt=TWO, num_images_per_prompt=2, prefix_codes=known[:, :2])


# ------------------------------------------------------------------------------------------------- saving


@pytest.mark.parametrize("kind, encoder_type", [("autoregressive", "t5"), ("diffusion", "clip_text_model")])
def test_round_trip_through_vq_hub_and_diffusers(kind, encoder_type, tmp_path):
    pipe = tiny(kind, encoder_type)
    prior = {"autoregressive": {"prior": ["transformers", "GPT2LMHeadModel"]},
             "diffusion": {"denoiser": ["transformers", "BertForMaskedLM"],
                           "scheduler": ["vq_hub", "DiscreteDiffusionScheduler"]}}[kind]  # fmt: skip
    assert saved_model_index(pipe, tmp_path / "pipe") == {
        "_class_name": type(pipe).__name__, **prior, "text_encoder": ["transformers", ENCODERS[encoder_type]],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"], "vqvae": ["vq_hub", "VQVAEModel"],
    }  # fmt: skip
    card = (tmp_path / "pipe" / "README.md").read_text()
    assert "the states of a text encoder" in card and "prompt=[" in card
    expected = codes_of(pipe, prompt=TWO, generator=seeded(1))
    for loaded in (VQPipeline.from_pretrained(tmp_path / "pipe"), DiffusionPipeline.from_pretrained(tmp_path / "pipe")):
        loaded.set_progress_bar_config(disable=True)
        assert type(loaded) is type(pipe) and type(loaded.text_encoder) is type(pipe.text_encoder)
        assert torch.equal(codes_of(loaded, prompt=TWO, generator=seeded(1)), expected)


# ------------------------------------------------------------------------------------------------- learning


def train_on_two_captions(pipe, steps: int, loss_of) -> torch.LongTensor:
    """Train the prior (the text encoder frozen, its states computed once) to map each caption of TWO to its own
    grid: only cross-attention tells the two apart."""
    grids = torch.randint(0, CODEBOOK, (2, 32), generator=seeded(7))
    embeds, mask, _, _ = pipe.encode_prompt(TWO, do_classifier_free_guidance=False)
    model = getattr(pipe, pipe.prior_component).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = loss_of(model, {"encoder_hidden_states": embeds, "encoder_attention_mask": mask}, grids)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return grids


def test_an_autoregressive_prior_learns_two_captions_through_cross_attention():
    pipe = tiny_autoregressive("clip_text_model", seed=1)

    def loss_of(prior, text, grids):
        tokens = torch.cat([torch.full((2, 1), pipe.vocabulary.bos_token_id), grids], dim=1)
        return next_code_loss(prior(input_ids=tokens, **text).logits, tokens, CODEBOOK)

    grids = train_on_two_captions(pipe, 150, loss_of)
    assert torch.equal(codes_of(pipe, prompt=TWO, temperature=0, guidance_scale=1.0).flatten(1), grids)


def test_a_diffusion_prior_learns_two_captions_through_cross_attention():
    pipe = tiny_diffusion("t5", seed=1)
    start, start_mask = pipe.bos_start_tokens(16)

    def loss_of(denoiser, text, grids):
        clean = grids.repeat(8, 1)
        noisy = pipe.scheduler.add_noise(clean, torch.randint(1, 21, (16,)))
        text = {key: value.repeat(8, *([1] * (value.ndim - 1))) for key, value in text.items()}
        logits = pipe.code_logits(start, start_mask, noisy, **text)
        return denoising_loss(logits, clean, noisy, pipe.vocabulary.mask_token_id)

    grids = train_on_two_captions(pipe, 200, loss_of)
    assert torch.equal(codes_of(pipe, prompt=TWO, temperature=0, guidance_scale=1.0, num_steps=8).flatten(1), grids)


# ------------------------------------------------------------------------------------------------- commands


@pytest.fixture(scope="module")
def scene_pipelines(tmp_path_factory) -> dict:
    """Both kinds around the shipped scenes tokenizer (32×64 scenes → 4×8 codes), with tiny random text parts,
    saved; and a captioned test split of 6 scenes."""
    from conftest import ROOT, load_example

    folder = tmp_path_factory.mktemp("scene-pipelines")
    load_example("make_captioned_scenes").main([
        "--fashion_mnist_dir", str(ROOT / "src/vq_hub/assets/fashion_mnist_mini"), "--test_source", "train.parquet",
        "--output_dir", str(folder / "scenes"), "--num_train", "2", "--num_test", "6", "--num_heldout", "2",
    ])  # fmt: skip
    import pyarrow.parquet as pq

    vqvae = VQVAEModel.from_pretrained(ROOT / "checkpoints" / "scenes-text-to-image" / "vqvae")
    captions = [caption for split in ("train", "test", "heldout")
                for caption in pq.read_table(folder / "scenes" / f"{split}.parquet")["caption"].to_pylist()]  # fmt: skip
    tokenizer = train_caption_tokenizer(captions, max_length=24)
    encoder = make_text_encoder("t5", len(tokenizer), hidden_size=32, num_layers=1, num_heads=2)
    saved = {"images": folder / "scenes" / "test.parquet"}
    for kind in KINDS:
        if kind == "autoregressive":
            prior = AutoModelForCausalLM.from_config(cross_attention_prior_config(vqvae, encoder.config, 1, 2))
            pipe = VQAutoregressiveTextEncoderPipeline(vqvae, encoder, tokenizer, prior)
        else:
            config = cross_attention_denoiser_config(vqvae, encoder.config, 1, 2)
            scheduler = DiscreteDiffusionScheduler(20, 512, "mask", config.mask_token_id)
            pipe = VQDiscreteDiffusionTextEncoderPipeline(vqvae, encoder, tokenizer,
                                                          AutoModelForMaskedLM.from_config(config), scheduler)
        pipe.save_pretrained(folder / kind)
        saved[kind] = folder / kind
    return saved


@pytest.mark.parametrize("kind", KINDS)
def test_every_command_takes_the_cross_attention_pipelines(kind, scene_pipelines, capsys, tmp_path):
    from vq_hub.cli import main

    def run(*argv) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    model = scene_pipelines[kind]
    steps = ["--num-steps", "2"] if kind == "diffusion" else []
    code, out, err = run("info", model)
    assert code == 0 and "text encoder: T5EncoderModel" in out and "cross-attends" in out, err
    code, out, err = run("generate", "--model", model, "--prompt", "a red bag", "--num-images", 1, *steps,
                         "--out", tmp_path / "g.png")  # fmt: skip
    assert code == 0 and "wrote" in out, err
    code, out, err = run("evaluate", "--model", model, "--images", scene_pipelines["images"], "--num-images", 3,
                         *steps, "--out", tmp_path / "e.json", "--no-progress")  # fmt: skip
    assert code == 0 and (tmp_path / "e.json").is_file(), err
    vqz = tmp_path / "x.vqz"
    code, out, err = run("compress", scene_pipelines["images"], "--model", model, "--num-images", 2, "--out", vqz)
    if kind == "diffusion":
        assert code == 1 and "the codec needs an autoregressive pipeline" in err, err
        return
    assert code == 0 and "bits per image" in out, err  # coded with the empty prompt's states
    code, out, err = run("decompress", vqz, "--model", model, "--out", tmp_path / "codes.npy")
    assert code == 0 and "codes verified" in out, err


@pytest.mark.parametrize("kind", KINDS)
def test_the_demo_draws_prompts_with_the_cross_attention_pipelines(kind, scene_pipelines):
    pytest.importorskip("gradio")
    from vq_hub.demo import UNCONDITIONAL, generate, load_models

    models = load_models([scene_pipelines[kind]])
    (pipeline,) = models.pipelines
    *_, (grid, status) = generate(models, pipeline, UNCONDITIONAL, 1, 2, 2.0, 1.0, 0, prompt="a red bag")
    assert status.startswith("done: 1 images") and grid.width > 0
