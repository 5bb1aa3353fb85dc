"""Every shipped pipeline and tokenizer (checkpoints/*) through every command that applies to it — generate,
reconstruct, tokenize/detokenize, compress/decompress, evaluate, codebook, info — and the demo's functions. A command
that does not apply must refuse in one line (exit code 1), never crash. Tiny sizes: one image per row, few steps."""

import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT, load_example

from vq_hub.cli import main
from vq_hub.data import shipped_fashion_mnist

CHECKPOINTS = ROOT / "checkpoints"
PIPELINES = sorted(p.name for p in CHECKPOINTS.iterdir() if (p / "model_index.json").is_file())
TOKENIZERS = sorted(p.name for p in CHECKPOINTS.iterdir() if (p / "config.json").is_file()
                    and "Classifier" not in (p / "config.json").read_text())  # fmt: skip
MODELS = PIPELINES + TOKENIZERS
IMAGES = str(shipped_fashion_mnist())


def test_every_shipped_model_is_covered():
    """A new checkpoint joins these tests by being shipped; the lists must hold every kind we ship."""
    assert set(PIPELINES) >= {"fashion-mnist-autoregressive", "fashion-mnist-diffusion", "fashion-mnist-vqvae2",
                              "scenes-text-to-image"}  # fmt: skip
    assert "fashion-mnist-vqvae" in TOKENIZERS


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    """A captioned test split (12 scenes from the shipped mini split) for the text-to-image pipeline."""
    folder = tmp_path_factory.mktemp("scenes")
    load_example("make_captioned_scenes").main([
        "--fashion_mnist_dir", str(ROOT / "src/vq_hub/assets/fashion_mnist_mini"), "--test_source", "train.parquet",
        "--output_dir", str(folder), "--num_train", "2", "--num_test", "12", "--num_heldout", "2",
    ])  # fmt: skip
    return folder / "test.parquet"


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def config_of(name: str) -> dict:
    folder = CHECKPOINTS / name
    return json.loads(((folder / "vqvae" if (folder / "model_index.json").is_file() else folder) / "config.json")
                      .read_text())  # fmt: skip


def index_of(name: str) -> dict:
    return json.loads((CHECKPOINTS / name / "model_index.json").read_text())


def is_text(name: str) -> bool:
    return "tokenizer" in index_of(name)


def step_flags(name: str) -> list[str]:
    index = index_of(name)
    takes_steps = "denoiser" in index or (index.get("scheduler") or [None])[0] is not None
    return ["--num-steps", "2"] if takes_steps else []


# ------------------------------------------------------------------------------------------------- every model


@pytest.mark.parametrize("name", MODELS)
def test_info(capsys, name):
    code, out, err = run(capsys, "info", CHECKPOINTS / name)
    assert code == 0, err
    assert "tokenizer:" in out and "codebook size" in out


@pytest.mark.parametrize("name", MODELS)
def test_reconstruct_tokenize_detokenize(capsys, tmp_path, name):
    code, out, err = run(capsys, "reconstruct", "--model", CHECKPOINTS / name, "--images", IMAGES, "--num-images", 2,
                         "--out", tmp_path / "r.png")  # fmt: skip
    assert code == 0 and "PSNR" in out, err
    codes = tmp_path / ("codes.npz" if "vqvae2" in name else "codes.npy")
    code, out, err = run(capsys, "tokenize", "--model", CHECKPOINTS / name, "--images", IMAGES, "--num-images", 2,
                         "--out", codes)  # fmt: skip
    assert code == 0, err
    code, out, err = run(capsys, "detokenize", "--model", CHECKPOINTS / name, "--codes", codes,
                         "--out", tmp_path / "d.png")  # fmt: skip
    assert code == 0 and "wrote" in out and "2 images" in out, err


@pytest.mark.parametrize("name", MODELS)
def test_codebook(capsys, tmp_path, name):
    code, out, err = run(capsys, "codebook", "--model", CHECKPOINTS / name, "--images", IMAGES, "--num-images", 4,
                         "--max-tiles", 16, "--top-codes", 2, "--out", tmp_path / "c.png")  # fmt: skip
    assert code == 0, err
    assert out.count("wrote") == (2 if "vqvae2" in name else 1)


# ------------------------------------------------------------------------------------------------- pipelines


@pytest.mark.parametrize("name", PIPELINES)
def test_generate(capsys, tmp_path, name):
    extra = ["--prompt", "a red sneaker to the left of a blue bag"] if is_text(name) else ["--class", "0", "1"]
    code, out, err = run(capsys, "generate", "--model", CHECKPOINTS / name, "--num-images", 1, *step_flags(name),
                         *extra, "--out", tmp_path / "g.png")  # fmt: skip
    assert code == 0 and "wrote" in out, err


@pytest.mark.parametrize("name", PIPELINES)
def test_compress_decompress(capsys, tmp_path, name):
    """Where a prior fits (an autoregressive single-level one) the codes round-trip; elsewhere one clear line."""
    vqz = tmp_path / "x.vqz"
    code, out, err = run(capsys, "compress", IMAGES, "--model", CHECKPOINTS / name, "--num-images", 3, "--out", vqz)
    if index_of(name)["_class_name"] != "VQAutoregressivePipeline":
        assert code == 1 and "the codec needs an autoregressive pipeline" in err, err
        return
    assert code == 0 and "bits per image" in out, err
    code, out, err = run(capsys, "decompress", vqz, "--model", CHECKPOINTS / name, "--out", tmp_path / "codes.npy")
    assert code == 0 and "codes verified" in out, err


@pytest.mark.parametrize("name", PIPELINES)
def test_evaluate(capsys, tmp_path, name, scenes):
    out_file = tmp_path / "e.json"
    if is_text(name):
        code, out, err = run(capsys, "evaluate", "--model", CHECKPOINTS / name, "--images", scenes, "--num-images", 4,
                             *step_flags(name), "--out", out_file, "--no-progress")  # fmt: skip
    else:
        code, out, err = run(capsys, "evaluate", "--model", CHECKPOINTS / name, "--num-images", 7, *step_flags(name),
                             "--out", out_file, "--no-progress")  # fmt: skip
    assert code == 0, err
    assert json.loads(out_file.read_text())["results"][0]["fid"] > 0


@pytest.mark.parametrize("name", MODELS)
def test_evaluate_the_tokenizer(capsys, tmp_path, name):
    """A tokenizer folder is scored on reconstructions; a pipeline folder's tokenizer is reached with its vqvae/."""
    folder = CHECKPOINTS / name / ("vqvae" if name in PIPELINES else "")
    config = config_of(name)
    code, out, err = run(capsys, "evaluate", "--model", folder, "--images", IMAGES, "--num-images", 7,
                         "--out", tmp_path / "t.json", "--no-progress")  # fmt: skip
    if config["in_channels"] == 3:  # 32×64 scenes: no shipped feature network reads them whole
        assert code == 1 and "no shipped feature network for 3-channel 32×64 images" in err, err
        return
    assert code == 0 and "rFID" in out, err


# ------------------------------------------------------------------------------------------------- the demo


@pytest.mark.parametrize("name", MODELS)
def test_the_demos_functions(name):
    pytest.importorskip("gradio")
    from PIL import Image

    from vq_hub.demo import KEEP_ROWS, UNCONDITIONAL, example_images, generate, inpaint, load_models, reconstruct

    models = load_models([CHECKPOINTS / name])
    example = example_images(32, count=1)[0]
    with Image.open(example) as image:
        picture = image.copy()
    maps, comparison, value = reconstruct(models, picture)
    assert value > 0 and maps.width > 0
    for pipeline, pipe in models.pipelines.items():
        steps = 2
        if is_text(name):
            *_, (grid, status) = generate(models, pipeline, UNCONDITIONAL, 1, steps, 2.0, 1.0, 0, prompt="a red bag")
        else:
            *_, (grid, status) = generate(models, pipeline, models.class_names[0], 1, steps, 2.0, 1.0, 0)
            *_, (kept, status) = inpaint(models, pipeline, {"background": picture, "layers": []}, KEEP_ROWS, 0,
                                         UNCONDITIONAL, 1, steps, 0)  # fmt: skip
        assert status.startswith("done: 1 images")


# ------------------------------------------------------------------------------------------------- residual codes


@pytest.fixture(scope="module")
def residual_models(tmp_path_factory) -> dict[str, Path]:
    """A kind no checkpoint ships: a tiny residual tokenizer (32×32 grayscale → 8×8 cells × depth 2, random weights)
    and an autoregressive and a diffusion pipeline over its codes, made here and saved as users save them."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    from vq_hub import (
        DiscreteDiffusionScheduler, VQAutoregressivePipeline, VQDiscreteDiffusionPipeline, VQVAEModel,
        autoregressive_prior_config, denoiser_config,
    )  # fmt: skip

    folder = tmp_path_factory.mktemp("residual")
    torch.manual_seed(0)
    vqvae = VQVAEModel(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 3,
                       up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 16, 16), latent_channels=4,
                       norm_num_groups=4, num_vq_embeddings=16, quantizer_type="residual",
                       quantizer_depth=2).eval()  # fmt: skip
    vqvae.save_pretrained(folder / "tokenizer")
    sizes = dict(hidden_size=16, num_layers=1, num_heads=2)
    prior = AutoModelForCausalLM.from_config(autoregressive_prior_config(vqvae, 10, **sizes)).eval()
    VQAutoregressivePipeline(vqvae=vqvae, prior=prior).save_pretrained(folder / "autoregressive")
    config = denoiser_config(vqvae, 10, **sizes)
    scheduler = DiscreteDiffusionScheduler(10, 16, "mask", mask_token_id=config.mask_token_id)
    denoiser = AutoModelForMaskedLM.from_config(config).eval()
    VQDiscreteDiffusionPipeline(vqvae, denoiser, scheduler).save_pretrained(folder / "diffusion")
    return {name: folder / name for name in ("tokenizer", "autoregressive", "diffusion")}


def test_a_residual_tokenizer_through_every_tokenizer_command(capsys, tmp_path, residual_models):
    import numpy as np

    model = residual_models["tokenizer"]
    code, out, err = run(capsys, "info", model)
    assert code == 0 and "residual, depth 2 (2 codebooks of 16" in out and "8×8×2 (depth)" in out, err
    code, out, err = run(capsys, "reconstruct", "--model", model, "--images", IMAGES, "--num-images", 2,
                         "--out", tmp_path / "r.png")  # fmt: skip
    assert code == 0 and "PSNR" in out, err
    code, out, err = run(capsys, "tokenize", "--model", model, "--images", IMAGES, "--num-images", 2,
                         "--out", tmp_path / "codes.npy")  # fmt: skip
    assert code == 0 and np.load(tmp_path / "codes.npy").shape == (2, 2, 8, 8), err
    code, out, err = run(capsys, "detokenize", "--model", model, "--codes", tmp_path / "codes.npy",
                         "--out", tmp_path / "d.png")  # fmt: skip
    assert code == 0 and "2 images" in out, err
    np.save(tmp_path / "flat.npy", np.load(tmp_path / "codes.npy")[0, 0])  # one depth's grid: not residual codes
    code, out, err = run(capsys, "detokenize", "--model", model, "--codes", tmp_path / "flat.npy",
                         "--out", tmp_path / "d.png")  # fmt: skip
    assert code == 1 and "expected integer codes (N, 2, h, w)" in err
    code, out, err = run(capsys, "codebook", "--model", model, "--images", IMAGES, "--num-images", 4,
                         "--max-tiles", 16, "--top-codes", 2, "--out", tmp_path / "c.png")  # fmt: skip
    assert code == 0 and out.count("wrote") == 3 and (tmp_path / "c-depth1.png").is_file(), err
    from PIL import Image

    depth0, depth1, rows = (np.asarray(Image.open(tmp_path / f"c{part}.png").convert("RGB"))
                            for part in ("-depth0", "-depth1", ""))  # fmt: skip
    assert rows.shape[0] == depth0.shape[0] + depth1.shape[0] and "depths' pictures above as rows" in out
    assert np.array_equal(rows[: depth0.shape[0], : depth0.shape[1]], depth0)
    assert np.array_equal(rows[depth0.shape[0] :, : depth1.shape[1]], depth1)
    code, out, err = run(capsys, "evaluate", "--model", model, "--images", IMAGES, "--num-images", 7,
                         "--out", tmp_path / "t.json", "--no-progress")  # fmt: skip
    assert code == 0 and "rFID" in out, err
    result = json.loads((tmp_path / "t.json").read_text())["results"][0]
    assert 0 < result["depth1_codebook_usage"] <= 1 and result["perplexity"] > 0


@pytest.mark.parametrize("kind", ["autoregressive", "diffusion"])
def test_residual_pipelines_through_every_pipeline_command(capsys, tmp_path, residual_models, kind):
    model = residual_models[kind]
    steps = ["--num-steps", "2"] if kind == "diffusion" else []
    code, out, err = run(capsys, "info", model)
    assert code == 0 and "depth 2" in out, err
    code, out, err = run(capsys, "generate", "--model", model, "--num-images", 1, *steps, "--class", "0", "1",
                         "--out", tmp_path / "g.png")  # fmt: skip
    assert code == 0 and "wrote" in out, err
    code, out, err = run(capsys, "evaluate", "--model", model, "--num-images", 7, *steps, "--out", tmp_path / "e.json",
                         "--no-progress")  # fmt: skip
    assert code == 0 and json.loads((tmp_path / "e.json").read_text())["results"][0]["fid"] > 0, err
    vqz = tmp_path / "x.vqz"
    code, out, err = run(capsys, "compress", IMAGES, "--model", model, "--num-images", 3, "--out", vqz)
    if kind == "diffusion":
        assert code == 1 and "the codec needs an autoregressive pipeline" in err, err
        return
    assert code == 0 and "bits per image" in out, err
    code, out, err = run(capsys, "decompress", vqz, "--model", model, "--out", tmp_path / "codes.npy")
    assert code == 0 and "codes verified" in out, err


# ------------------------------------------------------------------------------------------------- MagvitV2Tokenizer


@pytest.fixture(scope="module")
def magvit(tmp_path_factory) -> Path:
    """A random `MagvitV2Tokenizer` (Open-MAGVIT2's architecture; none is shipped) for Fashion-MNIST's 1×32×32
    images, 64 codes on a 16×16 grid, alone and inside an autoregressive and a discrete-diffusion pipeline."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    from vq_hub import (
        DiscreteDiffusionScheduler, MagvitV2Tokenizer, VQAutoregressivePipeline, VQDiscreteDiffusionPipeline,
        autoregressive_prior_config, denoiser_config,
    )  # fmt: skip

    folder = tmp_path_factory.mktemp("magvit")
    torch.manual_seed(0)
    tokenizer = MagvitV2Tokenizer(in_channels=1, out_channels=1, block_out_channels=(32, 32), layers_per_block=1,
                                  latent_channels=6, num_vq_embeddings=64, sample_size=32).eval()  # fmt: skip
    tokenizer.save_pretrained(folder / "tokenizer")
    small = dict(hidden_size=32, num_layers=1, num_heads=2)
    prior = AutoModelForCausalLM.from_config(autoregressive_prior_config(tokenizer, 10, **small))
    VQAutoregressivePipeline(vqvae=tokenizer, prior=prior).save_pretrained(folder / "autoregressive")
    config = denoiser_config(tokenizer, 10, **small)
    scheduler = DiscreteDiffusionScheduler(100, 64, "mask", mask_token_id=config.mask_token_id)
    VQDiscreteDiffusionPipeline(vqvae=tokenizer, denoiser=AutoModelForMaskedLM.from_config(config),
                                scheduler=scheduler).save_pretrained(folder / "diffusion")  # fmt: skip
    return folder


def test_a_magvit_v2_tokenizer_through_every_tokenizer_command(capsys, tmp_path, magvit):
    model = magvit / "tokenizer"
    code, out, err = run(capsys, "info", model)
    assert code == 0 and "MagvitV2Tokenizer (lfq quantizer)" in out and "codes: 6 bits, lookup-free" in out, err
    code, out, err = run(capsys, "reconstruct", "--model", model, "--images", IMAGES, "--num-images", 2,
                         "--out", tmp_path / "r.png")  # fmt: skip
    assert code == 0 and "PSNR" in out, err
    code, out, err = run(capsys, "tokenize", "--model", model, "--images", IMAGES, "--num-images", 2,
                         "--out", tmp_path / "c.npy")  # fmt: skip
    assert code == 0 and "(2, 16, 16)" in out, err
    code, out, err = run(capsys, "detokenize", "--model", model, "--codes", tmp_path / "c.npy", "--out", tmp_path / "d.png")
    assert code == 0 and "2 images of 32×32" in out, err
    code, out, err = run(capsys, "codebook", "--model", model, "--images", IMAGES, "--num-images", 4, "--max-tiles", 16,
                         "--top-codes", 2, "--out", tmp_path / "c.png")  # fmt: skip
    assert code == 0 and "6 bits per code, their bit planes drawn" in out, err
    code, out, err = run(capsys, "evaluate", "--model", model, "--images", IMAGES, "--num-images", 7,
                         "--out", tmp_path / "t.json", "--no-progress")  # fmt: skip
    assert code == 0 and "rFID" in out, err


def test_magvit_v2_pipelines_through_every_pipeline_command(capsys, tmp_path, magvit):
    for name, steps in (("autoregressive", []), ("diffusion", ["--num-steps", 2])):
        code, out, err = run(capsys, "info", magvit / name)
        assert code == 0 and "MagvitV2Tokenizer" in out, err
        code, out, err = run(capsys, "generate", "--model", magvit / name, "--num-images", 1, *steps, "--class", 0, 1,
                             "--out", tmp_path / f"{name}.png")  # fmt: skip
        assert code == 0 and "wrote" in out, err
    assert json.loads((magvit / "autoregressive" / "model_index.json").read_text())["vqvae"] == ["vq_hub",
                                                                                                 "MagvitV2Tokenizer"]
    vqz = tmp_path / "x.vqz"
    code, out, err = run(capsys, "compress", IMAGES, "--model", magvit / "autoregressive", "--num-images", 2, "--out", vqz)
    assert code == 0 and "bits per image" in out, err
    code, out, err = run(capsys, "decompress", vqz, "--model", magvit / "autoregressive", "--out", tmp_path / "c.npy")
    assert code == 0 and "codes verified" in out, err
    code, out, err = run(capsys, "evaluate", "--model", magvit / "autoregressive", "--num-images", 7,
                         "--out", tmp_path / "e.json", "--no-progress")  # fmt: skip
    assert code == 0 and json.loads((tmp_path / "e.json").read_text())["results"][0]["fid"] > 0, err
