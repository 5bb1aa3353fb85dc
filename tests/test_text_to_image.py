"""Text-to-image: the caption tokenizer, prompts as prefixes, guidance against the empty and negative prompts, both
text pipelines' round trips, and tiny priors trained on two captions."""

import logging

import pytest
import torch
from conftest import saved_model_index, tiny_vq_config
from PIL import Image
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer, PreTrainedTokenizerFast

from vq_hub import (
    DiscreteDiffusionScheduler, VQAutoregressiveTextToImagePipeline, VQDiscreteDiffusionTextToImagePipeline,
    VQPipeline, VQVAEModel, autoregressive_prior_config, denoiser_config,
)  # fmt: skip
from vq_hub.models.priors import denoising_loss, next_code_loss
from vq_hub.text import encode_prompts, train_caption_tokenizer

CODEBOOK = 16
CAPTIONS = ["a red sneaker to the left of a blue bag", "a blue bag on the right", "green trousers on the left",
            "a red t-shirt to the right of a green dress"]  # fmt: skip
TWO = ["a red sneaker to the left of a blue bag", "green trousers on the left"]


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_parts(seed: int = 0):
    torch.manual_seed(seed)
    vqvae = VQVAEModel(**tiny_vq_config(num_vq_embeddings=CODEBOOK, sample_size=[8, 16])).eval()  # 4×8 grids
    tokenizer = train_caption_tokenizer(CAPTIONS)
    sizes = dict(hidden_size=32, num_layers=2, num_heads=2, prefix_vocab_size=len(tokenizer),
                 prefix_length=tokenizer.model_max_length)  # fmt: skip
    return vqvae, tokenizer, sizes


def tiny_autoregressive(seed: int = 0) -> VQAutoregressiveTextToImagePipeline:
    vqvae, tokenizer, sizes = tiny_parts(seed)
    config = autoregressive_prior_config(vqvae, initializer_range=0.2, **sizes)  # prompts matter untrained
    prior = AutoModelForCausalLM.from_config(config).eval()
    pipe = VQAutoregressiveTextToImagePipeline(vqvae=vqvae, tokenizer=tokenizer, prior=prior)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_diffusion(seed: int = 0) -> VQDiscreteDiffusionTextToImagePipeline:
    vqvae, tokenizer, sizes = tiny_parts(seed)
    config = denoiser_config(vqvae, hidden_dropout_prob=0.0, initializer_range=0.2, **sizes)  # prompts matter untrained
    scheduler = DiscreteDiffusionScheduler(20, CODEBOOK, "mask", config.mask_token_id)
    pipe = VQDiscreteDiffusionTextToImagePipeline(vqvae, tokenizer, AutoModelForMaskedLM.from_config(config).eval(),
                                                  scheduler)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipes():
    return {"autoregressive": tiny_autoregressive(), "diffusion": tiny_diffusion()}


def codes_of(pipe, **kwargs) -> torch.LongTensor:
    if isinstance(pipe, VQDiscreteDiffusionTextToImagePipeline):
        kwargs.setdefault("num_steps", 4)
    return pipe(output_type="codes", **kwargs).codes


# ------------------------------------------------------------------------------------------------- tokenizer


def test_caption_tokenizer_round_trip_through_save_and_auto_tokenizer(tmp_path):
    tokenizer = train_caption_tokenizer(CAPTIONS)
    assert tokenizer.pad_token_id == 0 and tokenizer.unk_token_id == 1
    assert tokenizer.model_max_length == 10  # "a red t-shirt to the right of a green dress": t-shirt is one word
    ids = tokenizer("A red T-shirt, to the RIGHT of a green dress!")["input_ids"]
    assert tokenizer.decode(ids) == "a red t-shirt to the right of a green dress" and 1 not in ids
    tokenizer.save_pretrained(tmp_path)
    for loaded in (AutoTokenizer.from_pretrained(tmp_path), PreTrainedTokenizerFast.from_pretrained(tmp_path)):
        assert loaded(CAPTIONS)["input_ids"] == tokenizer(CAPTIONS)["input_ids"]
        assert loaded.model_max_length == 10 and loaded.pad_token == "[PAD]"
    bpe = train_caption_tokenizer(CAPTIONS * 5, kind="bpe", vocab_size=300)
    assert bpe.decode(bpe("a purple sneaker")["input_ids"]).strip() == "a purple sneaker"  # bytes: no unknowns
    with pytest.raises(ValueError, match="shorter than the longest"):
        train_caption_tokenizer(CAPTIONS, max_length=5)
    with pytest.raises(ValueError, match="kind"):
        train_caption_tokenizer(CAPTIONS, kind="char")


def test_prompts_become_padded_prefixes_and_the_empty_prompt_is_all_pads(caplog):
    tokenizer = train_caption_tokenizer(CAPTIONS)
    ids, mask = encode_prompts(tokenizer, ["a blue bag", "", "   "], 10)
    assert ids.shape == mask.shape == (3, 10)
    assert mask.tolist()[0] == [1, 1, 1] + [0] * 7 and mask[1:].sum() == 0 and ids[1:].eq(0).all()
    assert tokenizer.decode(ids[0, :3]) == "a blue bag"
    with caplog.at_level(logging.WARNING, logger="vq_hub.text"):
        encode_prompts(tokenizer, ["a purple bag"], 10)
    assert "a purple bag" in caplog.text and "[UNK]" in caplog.text
    with pytest.raises(ValueError, match=r"'a purple shoe on the left': 2 of its 6 words are unknown .* it knows: a, "):
        encode_prompts(tokenizer, ["a purple shoe on the left"], 10)  # once a warning, then noise
    with pytest.raises(ValueError, match=r"`prompt` .* is 13 tokens long, but this pipeline's text length is 10"):
        encode_prompts(tokenizer, ["a red sneaker to the left of a blue bag on the left"], 10)


# ------------------------------------------------------------------------------------------------- pipelines


@pytest.mark.parametrize("kind", ["autoregressive", "diffusion"])
def test_guidance_against_the_empty_prompt(pipes, kind):
    """Scale 1 is the conditional model alone; s = 1 + ε runs the batched guided path and follows it; s = 0 is the
    unconditional model — exactly what the empty prompt samples."""
    pipe = pipes[kind]
    prompts = [CAPTIONS[0], CAPTIONS[2]]
    conditional = codes_of(pipe, prompt=prompts, guidance_scale=1.0, temperature=0)
    unconditional = codes_of(pipe, prompt=["", ""], guidance_scale=1.0, temperature=0)
    assert not torch.equal(conditional, unconditional)
    assert torch.equal(codes_of(pipe, prompt=prompts, guidance_scale=1 + 1e-6, temperature=0), conditional)
    assert torch.equal(codes_of(pipe, prompt=prompts, guidance_scale=0.0, temperature=0), unconditional)
    assert codes_of(pipe, prompt=prompts, guidance_scale=4.0, generator=seeded(0)).shape == (2, 4, 8)


def test_static_cache_keeps_padded_prompts_masked(pipes):
    """Prompts of several lengths (pads masked in the prefix) sample the same codes with the static cache."""
    pipe = pipes["autoregressive"]
    prompts = [CAPTIONS[0], "", CAPTIONS[1]]
    try:
        results = []
        for implementation in ("dynamic", "static"):
            pipe.cache_implementation = implementation
            results.append(codes_of(pipe, prompt=prompts, guidance_scale=2.0, generator=seeded(4)))
    finally:
        pipe.cache_implementation = "dynamic"
    assert torch.equal(results[0], results[1])


@pytest.mark.parametrize("kind", ["autoregressive", "diffusion"])
def test_negative_prompts_replace_the_empty_prompt(pipes, kind):
    pipe = pipes[kind]
    negative = codes_of(pipe, prompt=CAPTIONS[3], guidance_scale=1.0, temperature=0)
    against = codes_of(pipe, prompt=CAPTIONS[0], negative_prompt=CAPTIONS[3], guidance_scale=0.0, temperature=0)
    assert torch.equal(against, negative)  # scale 0 samples the negative prompt's rows alone
    guided = codes_of(pipe, prompt=[CAPTIONS[0]] * 2, negative_prompt=[CAPTIONS[3], ""], guidance_scale=3.0,
                      temperature=0)  # fmt: skip
    assert torch.equal(guided[1:], codes_of(pipe, prompt=CAPTIONS[0], guidance_scale=3.0, temperature=0))
    assert not torch.equal(guided[0], guided[1])


@pytest.mark.parametrize("kind", ["autoregressive", "diffusion"])
def test_images_per_prompt_generators_and_output_types(pipes, kind):
    pipe = pipes[kind]
    codes = codes_of(pipe, prompt=TWO, num_images_per_prompt=2, generator=[seeded(i) for i in range(4)])
    assert codes.shape == (4, 4, 8)
    alone = codes_of(pipe, prompt=TWO[1], generator=seeded(3))  # the last image: second prompt, generator 3
    assert torch.equal(codes[3], alone[0])
    output = pipe(prompt=TWO[0], num_images_per_prompt=2, generator=seeded(0), num_steps=2) if kind == "diffusion" \
        else pipe(prompt=TWO[0], num_images_per_prompt=2, generator=seeded(0))  # fmt: skip
    assert [image.size for image in output.images] == [(16, 8), (16, 8)]
    assert isinstance(output.images[0], Image.Image)


@pytest.mark.parametrize("kind", ["autoregressive", "diffusion"])
def test_bad_prompts_raise_clearly(pipes, kind):
    pipe = pipes[kind]
    long = "a red sneaker to the left of a blue bag on the left"
    cases = [
        ({"prompt": long}, ValueError, r"`prompt` .* is 13 tokens long, .* text length is 10"),
        ({"prompt": "a bag", "negative_prompt": long}, ValueError, r"`negative_prompt` .* 13 tokens"),
        ({"prompt": ["a", "b"], "negative_prompt": ["a", "b", "c"]}, ValueError, "one per prompt"),
        ({}, ValueError, "`prompt` is required"),
        ({"prompt": 3}, TypeError, "`prompt` must be a string"),
        ({"prompt": []}, TypeError, "`prompt` must be a string"),
        ({"prompt": "a bag", "num_images_per_prompt": 0}, ValueError, "`num_images_per_prompt` must be ≥ 1"),
        ({"prompt": "a bag", "num_images_per_prompt": 2, "generator": [seeded()]}, ValueError, "list of 1"),
        ({"prompt": "a bag", "guidance_scale": float("nan")}, ValueError, "guidance_scale"),
        ({"prompt": "a bag", "output_type": "latent"}, ValueError, "output_type"),
    ]
    if kind == "autoregressive":
        cases.append(({"prompt": "a bag", "num_steps": 4}, TypeError, "VQDiscreteDiffusionTextToImagePipeline"))
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            pipe(**kwargs)


def test_the_tokenizer_must_be_the_priors_prefix_vocabulary(pipes):
    pipe = pipes["autoregressive"]
    other = train_caption_tokenizer(CAPTIONS + ["a purple hat"])
    with pytest.raises(ValueError, match="tokens, but the prior's prefix vocabulary has"):
        VQAutoregressiveTextToImagePipeline(vqvae=pipe.vqvae, tokenizer=other, prior=pipe.prior)
    plain = AutoModelForCausalLM.from_config(autoregressive_prior_config(pipe.vqvae, hidden_size=32, num_layers=1,
                                                                         num_heads=2))  # fmt: skip
    with pytest.raises(ValueError, match="needs a text prefix"):
        VQAutoregressiveTextToImagePipeline(vqvae=pipe.vqvae, tokenizer=pipe.tokenizer, prior=plain)


@pytest.mark.parametrize("kind", ["autoregressive", "diffusion"])
def test_round_trip_pins_model_index_and_keeps_the_tokenizer(pipes, kind, tmp_path):
    pipe = pipes[kind]
    prior = "prior" if kind == "autoregressive" else "denoiser"
    expected = {
        "autoregressive": {"_class_name": "VQAutoregressiveTextToImagePipeline",
                           "prior": ["transformers", "GPT2LMHeadModel"]},
        "diffusion": {"_class_name": "VQDiscreteDiffusionTextToImagePipeline",
                      "denoiser": ["transformers", "BertForMaskedLM"],
                      "scheduler": ["vq_hub", "DiscreteDiffusionScheduler"]},
    }[kind]  # fmt: skip
    assert saved_model_index(pipe, tmp_path / "pipe") == {
        **expected, "tokenizer": ["transformers", "PreTrainedTokenizerFast"], "vqvae": ["vq_hub", "VQVAEModel"],
    }  # fmt: skip
    assert (tmp_path / "pipe" / "tokenizer" / "tokenizer.json").is_file()
    card = (tmp_path / "pipe" / "README.md").read_text()
    assert "pipeline_tag: text-to-image" in card and "prompt=[" in card
    loaded = VQPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded) is type(pipe) and loaded.max_text_length == 10
    assert loaded.tokenizer(CAPTIONS)["input_ids"] == pipe.tokenizer(CAPTIONS)["input_ids"]
    original, copy = getattr(pipe, prior).state_dict(), getattr(loaded, prior).state_dict()
    assert all(torch.equal(original[key], copy[key]) for key in original)
    assert torch.equal(
        codes_of(loaded, prompt=TWO, generator=seeded(1)), codes_of(pipe, prompt=TWO, generator=seeded(1))
    )


# ------------------------------------------------------------------------------------------------- learning


def train_on_two_captions(pipe, steps: int, loss_of) -> torch.LongTensor:
    """Train the pipeline's prior to map each caption of TWO to its own grid (and the empty prompt to either)."""
    vocabulary = pipe.vocabulary
    grids = torch.randint(0, CODEBOOK, (2, 32), generator=seeded(7))
    ids, mask = encode_prompts(pipe.tokenizer, TWO, pipe.max_text_length)
    start, start_mask = vocabulary.start_tokens(torch.full((2,), vocabulary.bos_token_id), ids, mask)
    model = getattr(pipe, pipe.prior_component).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = loss_of(model, start, start_mask, grids)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return grids


def test_an_autoregressive_prior_trained_on_two_captions_draws_each():
    pipe = tiny_autoregressive(seed=1)

    def loss_of(prior, start, start_mask, grids):
        tokens = torch.cat([start, grids], dim=1)
        logits = prior(input_ids=tokens, attention_mask=torch.cat([start_mask, torch.ones_like(grids)], 1)).logits
        return next_code_loss(logits, tokens, CODEBOOK, prefix_length=pipe.max_text_length)

    grids = train_on_two_captions(pipe, 200, loss_of)
    assert torch.equal(codes_of(pipe, prompt=TWO, temperature=0, guidance_scale=1.0).flatten(1), grids)
    assert torch.equal(codes_of(pipe, prompt=TWO, top_k=1, guidance_scale=3.0).flatten(1), grids)


def test_a_diffusion_prior_trained_on_two_captions_draws_each():
    pipe = tiny_diffusion(seed=1)
    scheduler = pipe.scheduler

    def loss_of(denoiser, start, start_mask, grids):
        clean = grids.repeat(8, 1)
        noisy = scheduler.add_noise(clean, torch.randint(1, 21, (16,)))
        logits = pipe.code_logits(start.repeat(8, 1), start_mask.repeat(8, 1), noisy)
        return denoising_loss(logits, clean, noisy, pipe.vocabulary.mask_token_id)

    grids = train_on_two_captions(pipe, 250, loss_of)
    assert torch.equal(codes_of(pipe, prompt=TWO, temperature=0, guidance_scale=1.0, num_steps=8).flatten(1), grids)


def test_prompt_dropout_trains_rows_on_exactly_the_empty_prompt(pipes):
    """code_prior_training.start_tokens with prompt dropout p: about p of the rows become the empty prompt — token for
    token the rows the pipelines guide against — and the others keep their caption; without a prefix no random number
    is drawn (class-conditional runs are unchanged)."""
    from conftest import load_example

    training = load_example("code_prior_training")
    pipe = pipes["autoregressive"]
    vocabulary = pipe.vocabulary
    ids, mask = encode_prompts(pipe.tokenizer, [CAPTIONS[0]] * 4000, pipe.max_text_length)
    batch = {"codes": torch.zeros(4000, 32, dtype=torch.long), "labels": torch.full((4000,), -1),
             "prefix_ids": ids, "prefix_mask": mask}  # fmt: skip
    torch.manual_seed(0)
    tokens, attention_mask = training.start_tokens(vocabulary, batch, class_dropout=0.1, prompt_dropout=0.25)
    empty_tokens, empty_mask, _, _ = pipe.prompt_start_tokens("", None, 1, 1.0)
    prompt_tokens, prompt_mask, _, _ = pipe.prompt_start_tokens(CAPTIONS[0], None, 1, 1.0)
    dropped = (tokens == empty_tokens).all(1) & (attention_mask == empty_mask).all(1)
    kept = (tokens == prompt_tokens).all(1) & (attention_mask == prompt_mask).all(1)
    assert bool((dropped | kept).all()) and abs(float(dropped.float().mean()) - 0.25) < 0.03
    assert int(attention_mask[dropped, :-1].sum()) == 0  # only BOS is attended to in an empty-prompt row
    unchanged = training.start_tokens(vocabulary, batch, class_dropout=0.1, prompt_dropout=0.0)
    assert torch.equal(unchanged[0], prompt_tokens.expand(4000, -1))

    class_vocabulary, labels = type(vocabulary)(CODEBOOK, num_classes=3), {"labels": torch.tensor([0, 1, 2])}
    states = []
    for prompt_dropout in (0.0, 0.5):
        torch.manual_seed(0)
        training.start_tokens(class_vocabulary, labels, class_dropout=0.1, prompt_dropout=prompt_dropout)
        states.append(torch.get_rng_state())
    assert torch.equal(*states)
