"""The autoregressive prior: vocabulary, the shifted loss, KV-cache sampling, guidance, completion and round trips."""

import json
from pathlib import Path

import pytest
import torch
from conftest import saved_model_index, tiny_vq_config
from PIL import Image
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from vq_hub import CodeVocabulary, VQAutoregressivePipeline, VQVAEModel, VQPipeline, autoregressive_prior_config
from vq_hub.models.priors import next_code_loss

CODEBOOK, CLASSES = 16, 3


def tiny_pipeline(num_classes: int = CLASSES, model_type: str = "gpt2", seed: int = 0) -> VQAutoregressivePipeline:
    """8×8 images → 4×4 grids of 16 codes; a 2-layer prior."""
    torch.manual_seed(seed)
    vqvae = VQVAEModel(**tiny_vq_config(num_vq_embeddings=CODEBOOK, sample_size=8)).eval()
    config = autoregressive_prior_config(vqvae, num_classes, model_type=model_type, hidden_size=32, num_layers=2,
                                         num_heads=2)  # fmt: skip
    pipe = VQAutoregressivePipeline(vqvae=vqvae, prior=AutoModelForCausalLM.from_config(config).eval())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe() -> VQAutoregressivePipeline:
    return tiny_pipeline()


def codes_of(pipe, **kwargs) -> torch.LongTensor:
    return pipe(output_type="codes", **kwargs).codes


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------- vocabulary, loss


def test_vocabulary_layout_and_config():
    vocabulary = CodeVocabulary(codebook_size=16, num_classes=3, with_mask_token=True)
    assert (vocabulary.bos_token_id, vocabulary.null_class_token_id, vocabulary.mask_token_id) == (16, 16, 20)
    assert (vocabulary.pad_token_id, vocabulary.vocab_size) == (21, 22)
    assert vocabulary.condition_tokens(torch.tensor([0, 2, -1]), 3).tolist() == [17, 19, 16]
    assert vocabulary.condition_tokens(None, 2).tolist() == [16, 16]

    vqvae = VQVAEModel(**tiny_vq_config(num_vq_embeddings=16, sample_size=8))
    config = autoregressive_prior_config(vqvae, num_classes=3, hidden_size=32, num_layers=2, num_heads=2)
    assert (config.vocab_size, config.n_positions, config.code_grid_size) == (21, 17, [4, 4])
    assert config.bos_token_id == config.eos_token_id == 16 and config.pad_token_id == 20
    assert CodeVocabulary.from_config(config) == CodeVocabulary(16, 3)

    # vq_hub 0.1 configs made the pad BOS (and had no pad row): they load as they were saved.
    legacy = autoregressive_prior_config(vqvae, num_classes=3, hidden_size=32, num_layers=2, num_heads=2,
                                         vocab_size=20, pad_token_id=16)  # fmt: skip
    assert CodeVocabulary.from_config(legacy) == CodeVocabulary(16, 3, with_pad_token=False)
    with pytest.raises(ValueError, match="vocab_size 25"):
        CodeVocabulary.from_config(autoregressive_prior_config(vqvae, 3, hidden_size=32, vocab_size=25))
    with pytest.raises(ValueError, match="autoregressive_prior_config"):
        CodeVocabulary.from_config(GPT2Config(n_embd=32, n_layer=1, n_head=2))


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_prior_learns_a_fixed_first_code_after_bos_and_every_class(model_type):
    """Every training grid starts with code 5, unconditional (BOS) or not. A pad id equal to BOS (vq_hub 0.1) kept
    Llama's BOS embedding at zero, its logits after BOS exactly 0: a uniform first code for every unguided row."""
    pipe = tiny_pipeline(num_classes=2, model_type=model_type)
    vocabulary = pipe.vocabulary
    assert vocabulary.pad_token_id not in (vocabulary.bos_token_id, *range(17, 19))
    codes = torch.randint(0, CODEBOOK, (24, 16), generator=seeded(3))
    codes[:, 0] = 5
    conditions = torch.tensor([16, 17, 18] * 8)
    tokens = torch.cat([conditions[:, None], codes], dim=1)
    prior = pipe.prior.train()
    optimizer = torch.optim.Adam(prior.parameters(), lr=1e-2)
    for _ in range(60):
        loss = next_code_loss(prior(input_ids=tokens).logits, tokens, CODEBOOK)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    prior.eval()
    with torch.no_grad():
        first = prior(input_ids=torch.tensor([[16], [17], [18]])).logits[:, -1, :CODEBOOK].softmax(-1)
    assert first[:, 5].min() > 0.9, first[:, 5]
    assert codes_of(pipe, class_labels=[-1, 0, 1], temperature=0)[:, 0, 0].tolist() == [5, 5, 5]


def test_next_code_loss_pairs_each_logit_with_the_following_token():
    tokens = torch.tensor([[16, 3, 7, 7, 1, 0]])
    perfect = torch.full((1, 6, 20), -30.0)
    perfect[0, torch.arange(5), tokens[0, 1:]] = 30.0  # logit i is sure of token i + 1
    assert next_code_loss(perfect, tokens, 16) < 1e-6
    unshifted = torch.full((1, 6, 20), -30.0)
    unshifted[0, torch.arange(6), tokens[0].clamp(max=15)] = 30.0  # logit i "predicts" token i: off by one
    assert next_code_loss(unshifted, tokens, 16) > 10
    assert next_code_loss(perfect, tokens, 16, reduction="none").shape == (1, 5)
    with pytest.raises(ValueError, match="share"):
        next_code_loss(perfect[:, :-1], tokens, 16)


def test_prior_trained_on_one_sequence_reproduces_it_greedily_and_completes_its_prefix():
    pipe = tiny_pipeline(num_classes=2)
    target = torch.randint(0, CODEBOOK, (1, 16), generator=seeded(1))
    other = torch.randint(0, CODEBOOK, (1, 16), generator=seeded(2))
    tokens = torch.cat([torch.tensor([[17], [18]]), torch.cat([target, other])], dim=1)  # class 0 → target
    prior = pipe.prior.train()
    optimizer = torch.optim.Adam(prior.parameters(), lr=3e-3)
    for _ in range(300):
        loss = next_code_loss(prior(input_ids=tokens).logits, tokens, CODEBOOK)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    prior.eval()
    with torch.no_grad():
        assert next_code_loss(prior(input_ids=tokens).logits, tokens, CODEBOOK) < 0.01  # dropout off
    assert torch.equal(codes_of(pipe, class_labels=[0], temperature=0).flatten(1), target)
    assert torch.equal(codes_of(pipe, class_labels=[1], temperature=0).flatten(1), other)
    completed = codes_of(pipe, class_labels=[0], prefix_codes=target[:, :6], temperature=0)
    assert torch.equal(completed.flatten(1), target)
    first_token_only = codes_of(pipe, class_labels=[1], prefix_codes=other[:, :1], top_k=1)
    assert torch.equal(first_token_only.flatten(1), other)


# ------------------------------------------------------------------------------------------------- sampling


def test_kv_cache_sampling_matches_recomputing_the_whole_sequence(pipe):
    cached = codes_of(pipe, batch_size=3, class_labels=[0, 1, 2], temperature=0).flatten(1)
    tokens = torch.tensor([[17], [18], [19]])
    with torch.no_grad():
        for _ in range(16):
            logits = pipe.prior(input_ids=tokens, attention_mask=torch.ones_like(tokens)).logits[:, -1, :CODEBOOK]
            tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(cached, tokens[:, 1:])


def test_sampling_passes_the_cache_under_the_name_the_prior_takes(pipe):
    """transformers 5 renamed `past_key_values` to `cache` and warns on every call with the old name: one warning per
    sampled code, and an error once the old name is removed."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*past_key_values.*")
        codes = codes_of(pipe, class_labels=[0, 1], generator=seeded())
    assert codes.shape == (2, 4, 4)


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_static_cache_samples_what_the_dynamic_cache_samples(model_type):
    """The preallocated cache (fixed shapes, written in place) changes speed only: greedy, seeded, guided and
    completion sampling give the same codes as the growing cache."""
    pipe = tiny_pipeline(model_type=model_type, seed=3)
    prefix = torch.randint(0, CODEBOOK, (2, 5))
    calls = [  # fresh generators for each run
        lambda: dict(class_labels=[0, 2], temperature=0),
        lambda: dict(class_labels=[1, 2], top_k=5, generator=[seeded(0), seeded(1)]),
        lambda: dict(class_labels=[0, 1], guidance_scale=3.0, generator=seeded(2)),
        lambda: dict(prefix_codes=prefix, class_labels=[2, 0], generator=seeded(3)),
    ]
    for arguments in calls:
        results = {}
        for implementation in ("dynamic", "static"):
            pipe.cache_implementation = implementation
            results[implementation] = codes_of(pipe, **arguments())
        assert torch.equal(results["static"], results["dynamic"]), arguments()
    assert torch.equal(results["static"].flatten(1)[:, :5], prefix)
    pipe.cache_implementation = "paged"
    with pytest.raises(ValueError, match="cache_implementation"):
        codes_of(pipe, class_labels=[0])


def test_top_k_one_is_greedy_and_seeds_reproduce(pipe):
    greedy = codes_of(pipe, batch_size=2, class_labels=[0, 2], temperature=0)
    assert torch.equal(codes_of(pipe, batch_size=2, class_labels=[0, 2], top_k=1, generator=seeded(5)), greedy)
    first = codes_of(pipe, batch_size=4, generator=seeded(0), top_p=0.9)
    assert torch.equal(codes_of(pipe, batch_size=4, generator=seeded(0), top_p=0.9), first)
    assert not torch.equal(codes_of(pipe, batch_size=4, generator=seeded(1), top_p=0.9), first)
    per_row = codes_of(pipe, batch_size=2, generator=[seeded(0), seeded(1)])
    assert torch.equal(per_row[1], codes_of(pipe, batch_size=1, generator=seeded(1))[0])
    assert int(first.max()) < CODEBOOK  # never a special token


def test_guidance_combines_the_conditional_and_unconditional_rows(pipe):
    labels = [0, 1, 2, 1]
    conditional = codes_of(pipe, batch_size=4, class_labels=labels, temperature=0)
    unconditional = codes_of(pipe, batch_size=4, class_labels=[-1] * 4, temperature=0)
    # Scale 1 is conditional sampling; these scales run the batched guided path: s≈1 → cond, s=0 → uncond.
    assert torch.equal(codes_of(pipe, batch_size=4, class_labels=labels, temperature=0), conditional)
    assert torch.equal(codes_of(pipe, class_labels=labels, guidance_scale=1 + 1e-6, temperature=0), conditional)
    assert torch.equal(codes_of(pipe, class_labels=labels, guidance_scale=0.0, temperature=0), unconditional)
    assert not torch.equal(conditional, unconditional)
    guided = codes_of(pipe, class_labels=labels, guidance_scale=4.0, generator=seeded(0))
    assert guided.shape == (4, 4, 4)


def test_completion_keeps_the_rows_of_the_image(pipe):
    images = torch.rand(2, 3, 8, 8, generator=seeded(3)) * 2 - 1
    known = pipe.vqvae.tokenize(images)
    completed = codes_of(pipe, image=images, num_prefix_rows=3, class_labels=1, generator=seeded(0))
    assert torch.equal(completed[:, :3], known[:, :3])
    half = codes_of(pipe, image=images, generator=seeded(0))  # default: the top half
    assert torch.equal(half[:, :2], known[:, :2])
    pil = Image.fromarray(((images[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy())
    from_pil = codes_of(pipe, image=pil, num_prefix_rows=4)
    assert torch.equal(from_pil[0], pipe.vqvae.tokenize(_pil_tensor(pil))[0])


def test_zero_prefix_rows_samples_the_whole_grid_like_no_image(pipe):
    """`num_prefix_rows=0` (documented, the demo's slider minimum) once failed reshaping a 0-element tensor."""
    images = torch.rand(2, 3, 8, 8, generator=seeded(3)) * 2 - 1
    none_kept = codes_of(pipe, image=images, num_prefix_rows=0, class_labels=1, generator=seeded(0))
    assert torch.equal(none_kept, codes_of(pipe, batch_size=2, class_labels=1, generator=seeded(0)))


def test_a_non_square_prior_takes_pil_images_of_its_own_shape():
    """PIL images were resized to resolution[0]²: an 8×16 prior refused correctly sized PIL input (completion, the
    codec, the CLI and the demo all go through `encode_images`)."""
    from vq_hub.codec import compress_images, decompress_codes

    torch.manual_seed(0)
    vqvae = VQVAEModel(**tiny_vq_config(num_vq_embeddings=CODEBOOK, sample_size=[8, 16])).eval()
    config = autoregressive_prior_config(vqvae, CLASSES, hidden_size=32, num_layers=2, num_heads=2)
    pipe = VQAutoregressivePipeline(vqvae=vqvae, prior=AutoModelForCausalLM.from_config(config).eval())
    pipe.set_progress_bar_config(disable=True)
    assert pipe.resolution == (8, 16) and pipe.code_grid_size == (4, 8)
    pil = Image.fromarray((torch.rand(8, 16, 3, generator=seeded(1)) * 255).byte().numpy())  # 16 wide, 8 high
    known = pipe.encode_images(pil)
    assert known.shape == (1, 4, 8)
    completed = codes_of(pipe, image=pil, num_prefix_rows=2, generator=seeded(0))
    assert torch.equal(completed[:, :2], known[:, :2])
    assert torch.equal(decompress_codes(pipe, compress_images(pipe, [pil, pil])).codes, known.expand(2, -1, -1))


def _pil_tensor(image: Image.Image) -> torch.Tensor:
    from vq_hub.data import image_to_tensor

    return image_to_tensor(image, 8, 3)[None]


def test_output_types_and_callback(pipe):
    seen = []
    output = pipe(batch_size=2, generator=seeded(0), callback_on_step_end=lambda p, i, pos, kw: seen.append(
        (i, pos, kw["codes"].shape[1])))  # fmt: skip
    assert len(output.images) == 2 and output.images[0].size == (8, 8) and output.codes.shape == (2, 4, 4)
    assert seen[0] == (0, 0, 1) and seen[-1] == (15, 15, 16)
    array = pipe(batch_size=2, generator=seeded(0), output_type="np").images
    assert array.shape == (2, 8, 8, 3) and 0 <= array.min() and array.max() <= 1
    tensor, codes = pipe(batch_size=2, generator=seeded(0), output_type="pt", return_dict=False)
    assert tensor.shape == (2, 3, 8, 8) and torch.equal(codes, output.codes)
    assert pipe(batch_size=2, output_type="codes").images is None


def test_any_causal_lm_works_as_the_prior():
    pipe = tiny_pipeline(model_type="llama")
    assert type(pipe.prior).__name__ == "LlamaForCausalLM"
    greedy = codes_of(pipe, batch_size=2, class_labels=[0, 1], temperature=0)
    assert torch.equal(codes_of(pipe, batch_size=2, class_labels=[0, 1], top_k=1, generator=seeded(0)), greedy)


def test_bad_input_raises_clearly(pipe):
    unconditional = tiny_pipeline(num_classes=0)
    cases = [
        (dict(class_labels=[3]), ValueError, r"class_labels.*\[0, 2\]"),
        (dict(batch_size=2, class_labels=[0, 1, 2]), ValueError, "one label or 2"),
        (dict(prefix_codes=torch.zeros(1, 17, dtype=torch.long)), ValueError, "more than the 4×4 grid"),
        (dict(prefix_codes=torch.full((1, 3), 16)), ValueError, r"prefix_codes.*\[0, 15\]"),
        (dict(prefix_codes=torch.zeros(1, 2, 3, dtype=torch.long)), ValueError, "4 codes wide"),
        (dict(image=torch.zeros(1, 3, 16, 16)), ValueError, "8×8 pixels"),
        (dict(image=torch.zeros(1, 3, 8, 8), num_prefix_rows=5), ValueError, "num_prefix_rows"),
        (dict(num_steps=50), TypeError, "VQDiscreteDiffusionPipeline"),
        (dict(num_inference_steps=50), TypeError, "VQDiscreteDiffusionPipeline"),
        (dict(output_type="latent"), ValueError, "output_type"),
        (dict(temperature=-1), ValueError, "temperature"),
        (dict(top_p=0), ValueError, "top_p"),
        (dict(guidnce_scale=2), TypeError, "guidnce_scale"),
        (dict(temperature=float("nan")), ValueError, "`temperature` must be a finite number"),
        (dict(guidance_scale=float("inf"), class_labels=[0]), ValueError, "`guidance_scale` must be a finite"),
        (dict(top_k=1.5), TypeError, "`top_k` must be an integer"),
        (dict(top_p=float("nan")), ValueError, "top_p"),
        (dict(batch_size=True), TypeError, "`batch_size` must be an integer"),
        (dict(batch_size=0), ValueError, "`batch_size` must be ≥ 1"),
        (dict(prefix_codes=torch.zeros(0, 3, dtype=torch.long)), ValueError, "empty batch"),
        (dict(prefix_codes=[[1, 2]]), TypeError, "prefix_codes"),
        (dict(prefix_codes=torch.zeros(1, 4, dtype=torch.long), num_prefix_rows=1), ValueError,
         "`num_prefix_rows` applies to `image`"),
        (dict(batch_size=2, generator=[seeded(0)]), ValueError, "list of 1 generators"),
        (dict(generator=0), TypeError, "generator"),
        (dict(class_labels="cat"), TypeError, "class_labels"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            pipe(**kwargs)
    with pytest.raises(ValueError, match="unconditional"):
        unconditional(class_labels=[0])


def test_a_stock_transformers_prior_is_refused_with_the_helper_to_use(pipe):
    stock = AutoModelForCausalLM.from_config(GPT2Config(vocab_size=20, n_embd=32, n_layer=1, n_head=2))
    with pytest.raises(ValueError, match="autoregressive_prior_config"):
        VQAutoregressivePipeline(vqvae=pipe.vqvae, prior=stock)


def test_a_prior_with_nan_weights_is_an_error_not_code_zero(tmp_path):
    broken = tiny_pipeline()
    with torch.no_grad():
        broken.prior.lm_head.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN or infinite logits"):
        broken(batch_size=2, temperature=0)


# ------------------------------------------------------------------------------------------------- round trips


def test_save_and_load_round_trip_pins_model_index(pipe, tmp_path):
    assert saved_model_index(pipe, tmp_path / "pipe") == {
        "_class_name": "VQAutoregressivePipeline",
        "prior": ["transformers", "GPT2LMHeadModel"],
        "vqvae": ["vq_hub", "VQVAEModel"],
    }
    card = (tmp_path / "pipe" / "README.md").read_text()
    assert "library_name: vq_hub" in card and "VQPipeline.from_pretrained" in card
    loaded = VQPipeline.from_pretrained(tmp_path / "pipe")
    assert type(loaded) is VQAutoregressivePipeline and isinstance(loaded.prior, GPT2LMHeadModel)
    for original, copy in [(pipe.prior, loaded.prior), (pipe.vqvae, loaded.vqvae)]:
        expected, actual = original.state_dict(), copy.state_dict()
        assert expected.keys() == actual.keys()
        assert all(torch.equal(expected[key], actual[key]) for key in expected)
    loaded.set_progress_bar_config(disable=True)
    images = loaded(batch_size=4).images
    assert len(images) == 4 and all(isinstance(image, Image.Image) for image in images)
    assert torch.equal(codes_of(loaded, batch_size=2, generator=seeded(0)), codes_of(pipe, batch_size=2,
                                                                                       generator=seeded(0)))  # fmt: skip
    assert type(VQAutoregressivePipeline.from_pretrained(tmp_path / "pipe")) is VQAutoregressivePipeline


def test_loading_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        VQPipeline.from_pretrained(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ValueError, match="not a vq_hub pipeline"):
        VQPipeline.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        VQPipeline.from_pretrained(tmp_path / "missing" / "folder")


def test_loads_from_a_hub_snapshot_offline(pipe, tmp_path, monkeypatch):
    """A repository in the HF cache layout (models--owner--name/snapshots/<commit>, refs/main) loads by repo id with
    HF_HUB_OFFLINE=1 — the path diffusers' own download refuses for components from other libraries."""
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--vq-hub--tiny-ar"
    pipe.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    loaded = VQPipeline.from_pretrained("vq-hub/tiny-ar", cache_dir=str(tmp_path / "hub"))
    assert type(loaded) is VQAutoregressivePipeline
    assert torch.equal(loaded.prior.lm_head.weight, pipe.prior.lm_head.weight)
    with pytest.raises(FileNotFoundError, match="could not be fetched or found in the cache"):
        VQPipeline.from_pretrained("vq-hub/not-cached", cache_dir=str(tmp_path / "hub"))


def test_push_to_hub_uploads_our_card(pipe, monkeypatch):
    import vq_hub.hub

    calls = []

    class RecordingHfApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls.append(("create_repo", repo_id, private))

        def upload_folder(self, repo_id, folder_path, commit_message, ignore_patterns=None):
            files = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
            calls.append(("upload_folder", repo_id, files, Path(folder_path, "README.md").read_text()))
            return "https://huggingface.co/me/tiny-ar/commit/abc"

    monkeypatch.setattr(vq_hub.hub, "HfApi", RecordingHfApi)
    url = pipe.push_to_hub("me/tiny-ar", token="hf_x", training="A test run.")
    assert url.endswith("/commit/abc")
    assert calls[0] == ("init", "hf_x") and calls[1] == ("create_repo", "me/tiny-ar", False)
    _, repo_id, files, card = calls[2]
    assert repo_id == "me/tiny-ar"
    assert {"model_index.json", "README.md", "prior/config.json", "prior/model.safetensors",
            "vqvae/config.json", "vqvae/diffusion_pytorch_model.safetensors"} <= set(files)  # fmt: skip
    assert 'DiffusionPipeline.from_pretrained("me/tiny-ar")' in card and "A test run." in card
