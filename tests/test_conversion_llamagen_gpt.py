"""conversion: LlamaGen's class-conditional GPT becomes a `LlamaGenForCausalLM` prior with LlamaGen's logits and greedy
samples, and a `VQAutoregressivePipeline` with it samples LlamaGen's guided codes.

tests/data/llamagen_gpt/ holds a tiny GPT built and run by LlamaGen's own code (FoundationVision/LlamaGen,
`autoregressive/models/gpt.py` and `generate.py`; conversion/make_llamagen_gpt_test_data.py records how,
reference.json with what): its checkpoint in LlamaGen's format, its logits on fixed class labels and code prefixes,
and its own `generate` loop's greedy codes with and without classifier-free guidance. No LlamaGen code is needed here.
"""

import json
import re

import pytest
import torch
from conftest import ROOT, saved_model_index, tiny_vq_config
from safetensors.torch import load_file

from vq_hub import LlamaGenForCausalLM, VQAutoregressivePipeline, VQPipeline, VQVAEModel
from vq_hub.conversion_llamagen_gpt import convert_llamagen_gpt, llamagen_gpt_config, llamagen_gpt_shapes
from vq_hub.models.llamagen import LlamaGenRotaryEmbedding

DATA = ROOT / "tests" / "data" / "llamagen_gpt"
CHECKPOINT = DATA / "llamagen_gpt_tiny.pt"
CODES, CLASSES, GRID, HEADS = 64, 10, 8, 4  # the tiny model's (reference.json); its width is none of LlamaGen's
# Both sides compute in float32 from the same weights, in a different order (transformers' SDPA call and the permuted
# head dimensions against LlamaGen's): logits differ by rounding, 1.8e-6 measured on logits of scale 2.7. The bound,
# 2e-5 of their scale, is ten times that and far below any mapping mistake (a swapped weight or a wrong rotary angle
# changes logits by their own scale). Greedy codes are compared exactly: the smallest best-vs-second-best logit margin
# along LlamaGen's greedy paths is 2.5e-3 (reference.json).
RELATIVE_TOLERANCE = 2e-5


@pytest.fixture(scope="module")
def reference():
    return load_file(DATA / "reference.safetensors")


@pytest.fixture(scope="module")
def prior():
    return convert_llamagen_gpt(CHECKPOINT, grid_size=GRID, num_heads=HEADS)


@pytest.fixture(scope="module")
def pipe(prior):
    vqvae = VQVAEModel(**tiny_vq_config(num_vq_embeddings=CODES, sample_size=2 * GRID)).eval()
    pipe = VQAutoregressivePipeline(vqvae=vqvae, prior=prior)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def stored_weights() -> dict[str, torch.Tensor]:
    return torch.load(CHECKPOINT, weights_only=True)["model"]


def greedy_codes(pipe, labels, guidance_scale: float = 1.0) -> torch.LongTensor:
    codes = pipe(class_labels=labels, guidance_scale=guidance_scale, temperature=0, output_type="codes").codes
    return codes.flatten(1)


def test_the_test_data_stays_small_and_says_where_it_comes_from():
    assert sum(path.stat().st_size for path in DATA.iterdir()) < 400_000
    record = json.loads((DATA / "reference.json").read_text())
    assert record["source"] == "https://github.com/FoundationVision/LlamaGen"
    assert re.fullmatch(r"[0-9a-f]{40}", record["commit"])
    assert min(record["smallest_greedy_margin"].values()) > 1e-3
    assert (record["model_args"]["vocab_size"], record["model_args"]["num_classes"]) == (CODES, CLASSES)


def test_llamagen_logits_for_classes_the_null_class_and_code_prefixes(prior, reference):
    """LlamaGen's `model(prefix, labels)`: the class token (the last label is LlamaGen's null class, our BOS) then
    the codes; the logits at the class token and after every code, over the K codes."""
    labels = reference["logit_labels"]
    condition = torch.where(labels == CLASSES, CODES, CODES + 1 + labels)  # null → BOS (id K), class c → K + 1 + c
    tokens = torch.cat([condition[:, None], reference["prefix"]], dim=1)
    with torch.no_grad():
        logits = prior(tokens).logits
    expected = reference["logits"]
    assert logits.shape[-1] == CODES + 1 + CLASSES + 1  # codes, BOS (= null class), classes, PAD
    assert (logits[..., :CODES] - expected).abs().max() <= RELATIVE_TOLERANCE * expected.abs().max()


@pytest.mark.parametrize("sampler", ["dynamic", "static", "graphed step"])
def test_the_pipeline_samples_llamagens_greedy_codes_with_and_without_guidance(pipe, reference, sampler):
    """LlamaGen's own `generate` (KV cache, `uncond + (cond − uncond) · cfg_scale`, argmax) against vq_hub's sampler
    on each of its paths: the growing cache, the static one, and the step CUDA graphs record (run eagerly on CPU)."""
    pipe.cache_implementation = "static" if sampler == "static" else "dynamic"
    pipe.cuda_graphs = sampler == "graphed step"
    try:
        labels = reference["greedy_labels"]
        assert torch.equal(greedy_codes(pipe, labels), reference["greedy"])
        assert torch.equal(greedy_codes(pipe, labels, guidance_scale=4.0), reference["greedy_cfg"])
    finally:
        pipe.cache_implementation, pipe.cuda_graphs = "dynamic", False
    assert reference["greedy_cfg"].unique().numel() > 10  # many codes exercised, not one repeated


def test_the_vocabulary_and_config_are_read_from_the_weights(prior):
    config, weights = prior.config, stored_weights()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 2, HEADS)
    assert (config.intermediate_size, config.rms_norm_eps, config.code_grid_size) == (192, 1e-5, [GRID, GRID])
    assert (config.codebook_size, config.num_classes, config.tie_word_embeddings) == (CODES, CLASSES, False)
    embedding, head = prior.model.embed_tokens.weight, prior.lm_head.weight
    assert torch.equal(embedding[:CODES], weights["tok_embeddings.weight"].float())
    classes = weights["cls_embedding.embedding_table.weight"].float()
    assert torch.equal(embedding[CODES], classes[CLASSES])  # BOS is LlamaGen's null class
    assert torch.equal(embedding[CODES + 1 : CODES + 1 + CLASSES], classes[:CLASSES])
    assert not embedding[-1].any() and not head[CODES:].any()  # PAD and the special tokens' logits: zero rows
    table = prior.model.rotary_emb
    assert not table.cos[0].any() and not table.sin[0].any()  # the class token: zero query and key
    assert table.cos.shape == (1 + GRID * GRID, 64 // HEADS)


def test_saved_pipelines_record_the_prior_under_vq_hub_and_reload(pipe, reference, tmp_path):
    index = saved_model_index(pipe, tmp_path / "pipe")
    assert index["prior"] == ["vq_hub", "LlamaGenForCausalLM"] and index["vqvae"] == ["vq_hub", "VQVAEModel"]
    reloaded = VQPipeline.from_pretrained(tmp_path / "pipe")
    reloaded.set_progress_bar_config(disable=True)
    assert type(reloaded.prior) is LlamaGenForCausalLM
    assert torch.equal(reloaded.prior.model.rotary_emb.cos, pipe.prior.model.rotary_emb.cos)  # rebuilt, not saved
    assert torch.equal(greedy_codes(reloaded, reference["greedy_labels"], 4.0), reference["greedy_cfg"])


def test_missing_unknown_and_unsupported_weights_are_named(tmp_path):
    weights = stored_weights()

    def refused(state_dict, pattern, **options):
        torch.save({"model": state_dict}, tmp_path / "gpt.pt")
        with pytest.raises(ValueError, match=pattern):
            convert_llamagen_gpt(tmp_path / "gpt.pt", grid_size=GRID, **{"num_heads": HEADS, **options})

    refused({**weights, "layers.0.attention.mystery.weight": torch.zeros(1)},
            r"not understood.*layers\.0\.attention\.mystery\.weight")  # fmt: skip
    refused({k: v for k, v in weights.items() if k != "layers.1.ffn_norm.weight"},
            r"lacks 1 weight.*layers\.1\.ffn_norm")  # fmt: skip
    refused({**weights, "layers.0.feed_forward.w2.weight": torch.zeros(64, 100)}, r"w2\.weight has shape \(64, 100\)")
    refused({**weights, "cls_embedding.cap_proj.fc1.weight": torch.zeros(1)}, "text-conditional")
    refused({**weights, "layers.0.attention.wqkv.weight": torch.zeros(128, 64)}, "grouped key/value heads")
    refused(weights, "width 64 is none of LlamaGen's models", num_heads=None)
    refused(weights, "heads of a multiple of 4", num_heads=32)  # heads of 2: no room for two rotary axes


def test_llamagens_own_rotary_table_and_a_stored_one(reference, tmp_path):
    """LlamaGen's `precompute_freqs_cis_2d` (stored from its code: pairs of (cos, sin), zero for the class token)
    is our table in `rotate_half` layout; an old checkpoint carrying it converts, one for another grid is refused."""
    theirs = reference["freqs_cis"]  # (1 + 8·8, head_dim / 2, 2)
    config = llamagen_gpt_config(stored_weights(), grid_size=GRID, num_heads=HEADS)
    table, half = LlamaGenRotaryEmbedding(config), config.head_dim // 2
    assert torch.equal(table.cos, theirs[..., 0].repeat(1, 2)) and torch.equal(table.sin, theirs[..., 1].repeat(1, 2))
    assert torch.equal(table.cos[:, :half], table.cos[:, half:])
    torch.save({"model": {**stored_weights(), "freqs_cis": theirs}}, tmp_path / "old.pt")
    assert convert_llamagen_gpt(tmp_path / "old.pt", grid_size=GRID, num_heads=HEADS).config.code_grid_size == [8, 8]
    with pytest.raises(ValueError, match="freqs_cis .* 65 positions, not the 37 of a 6² grid"):
        convert_llamagen_gpt(tmp_path / "old.pt", grid_size=6, num_heads=HEADS)


# ------------------------------------------------------------------------------------------------- LlamaGen's sizes


def test_the_sampler_handles_llamagens_576_codes_and_16384_code_vocabulary(tmp_path):
    """LlamaGen-B/L at 384×384: a 24×24 grid (576 codes after the class token) over 16,384 codes and 1,000 classes —
    here in a one-layer model of width 16 (random weights in LlamaGen's layout), so that it stays fast on a CPU. The
    guided greedy codes of the growing cache and of the graphed step (on its static cache) agree."""
    generator = torch.Generator().manual_seed(0)
    shapes = llamagen_gpt_shapes(width=16, num_layers=1, ffn_size=32, codebook_size=16384, num_classes=1000)
    torch.save({"model": {key: torch.randn(shape, generator=generator) for key, shape in shapes.items()}},
               tmp_path / "c2i_wide_vocabulary_384.pt")  # fmt: skip
    prior = convert_llamagen_gpt(tmp_path / "c2i_wide_vocabulary_384.pt", grid_size=24, num_heads=2)
    vqvae = VQVAEModel(**tiny_vq_config(num_vq_embeddings=16384, sample_size=48)).eval()
    pipe = VQAutoregressivePipeline(vqvae=vqvae, prior=prior)
    pipe.set_progress_bar_config(disable=True)
    results = {}
    for graphed in (False, True):
        pipe.cuda_graphs = graphed
        results[graphed] = pipe(class_labels=[207], guidance_scale=4.0, temperature=0, output_type="codes").codes
    assert results[False].shape == (1, 24, 24) and int(results[False].max()) < 16384
    assert torch.equal(results[True], results[False]) and results[False].unique().numel() > 100


# ------------------------------------------------------------------------------------------------- script, command


def run_script(argv: list[str]) -> None:
    import importlib.util

    path = ROOT / "conversion" / "convert_llamagen_gpt.py"
    spec = importlib.util.spec_from_file_location("convert_llamagen_gpt", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(argv)


def test_the_script_with_a_tokenizer_writes_a_pipeline_with_its_model_card(reference, tmp_path):
    """The user's path in small: a converted tokenizer folder and the GPT checkpoint become one pipeline folder that
    `VQPipeline.from_pretrained` loads and samples LlamaGen's guided greedy codes with."""
    VQVAEModel(**tiny_vq_config(num_vq_embeddings=CODES, sample_size=2 * GRID)).save_pretrained(tmp_path / "tokenizer")
    destination = tmp_path / "llamagen-tiny"
    argv = ["--ckpt", str(CHECKPOINT), "--tokenizer", str(tmp_path / "tokenizer"), "--dst", str(destination),
            "--image_size", str(2 * GRID), "--num_heads", str(HEADS)]  # fmt: skip
    run_script(argv)
    pipe = VQPipeline.from_pretrained(destination)
    pipe.set_progress_bar_config(disable=True)
    assert torch.equal(greedy_codes(pipe, reference["greedy_labels"], 4.0), reference["greedy_cfg"])
    card = (destination / "README.md").read_text()
    assert "license: mit" in card and "https://github.com/FoundationVision/LlamaGen" in card
    assert "python conversion/convert_llamagen_gpt.py " + " ".join(argv) in card
    assert 'VQPipeline.from_pretrained("llamagen-tiny")' in card and "guidance_scale=4.0" in card
    record = json.loads((destination / "conversion.json").read_text())
    assert record["license"] == "mit" and record["converted_from"] == str(CHECKPOINT)
    with pytest.raises(ValueError, match="tokenizer has 32 codes, the GPT models 64"):
        VQVAEModel(**tiny_vq_config(sample_size=2 * GRID)).save_pretrained(tmp_path / "other")
        run_script(["--ckpt", str(CHECKPOINT), "--tokenizer", str(tmp_path / "other"), "--dst", str(tmp_path / "x"),
                    "--image_size", str(2 * GRID), "--num_heads", str(HEADS)])  # fmt: skip


def test_vq_hub_convert_llamagen_gpt_writes_the_prior_and_refuses_foreign_options(prior, tmp_path, capsys):
    from vq_hub.cli import main

    out = tmp_path / "cli"
    assert main(["convert", "llamagen-gpt", str(CHECKPOINT), "--out", str(out), "--image-size", "128",
                 "--num-heads", "4"]) == 0  # fmt: skip
    assert "a LlamaGenForCausalLM: 116,544 parameters, 8×8 grids of 64 codes, 10 classes" in capsys.readouterr().out
    converted = LlamaGenForCausalLM.from_pretrained(out)
    for key, value in prior.state_dict().items():
        assert torch.equal(converted.state_dict()[key], value), key
    command = f"vq-hub convert llamagen-gpt {CHECKPOINT} --out {out} --image-size 128 --num-heads 4"
    assert command in (out / "README.md").read_text()
    assert main(["convert", "llamagen-gpt", str(CHECKPOINT), "--out", str(tmp_path / "x"), "--subfolder", "a"]) == 1
    assert "--subfolder does not apply to llamagen-gpt" in capsys.readouterr().err
    assert main(["convert", "llamagen-vq", str(CHECKPOINT), "--out", str(tmp_path / "y"), "--tokenizer", "t"]) == 1
    assert "--tokenizer does not apply to llamagen-vq" in capsys.readouterr().err
    assert main(["convert", "llamagen-gpt", str(CHECKPOINT), "--out", str(tmp_path / "z")]) == 1
    assert "pass num_heads" in capsys.readouterr().err
