"""The Gradio demo served in-process on a free local port and called through `gradio_client`: every endpoint, with
the shipped checkpoints, checking the images, the streamed steps and the PSNR it returns."""

import runpy
import socket

import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image

gr = pytest.importorskip("gradio")  # the `demo` extra; `dev` installs it
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from vq_hub.cli import main
from vq_hub.data import image_to_tensor
from vq_hub.demo import DRAWN_MASK, KEEP_ROWS, UNCONDITIONAL, build_demo, example_images, load_models, reconstruct
from vq_hub.metrics import psnr

DIFFUSION, AUTOREGRESSIVE = "fashion-mnist-diffusion", "fashion-mnist-autoregressive"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def models():
    return load_models()


@pytest.fixture(scope="module")
def client(models):
    demo = build_demo(models)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    yield Client(url, verbose=False, download_files=True)
    demo.close()


@pytest.fixture(scope="module")
def example():
    return example_images(32, count=1)[0]


def picture(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L"), dtype=np.float32)


def test_the_api_has_the_three_endpoints(client):
    assert set(client.view_api(return_format="dict", print_info=False)["named_endpoints"]) == {
        "/generate", "/reconstruct", "/inpaint",
    }  # fmt: skip


def test_generate_draws_prompts_with_the_text_to_image_pipeline(client):
    path, status = client.predict("scenes-text-to-image", "Trouser", 2, 4, 3.0, 1.0, 0,
                                  "a red sneaker to the left of a blue bag", api_name="/generate")  # fmt: skip
    assert status == "done: 2 images, VQDiscreteDiffusionTextToImagePipeline"
    assert picture(path).shape == (36 * 4, (2 * 66 + 2) * 4)  # two 32×64 scenes side by side, enlarged 4×
    with pytest.raises(Exception, match="draws prompts: type one"):
        client.predict("scenes-text-to-image", "Trouser", 2, 4, 3.0, 1.0, 0, " ", api_name="/generate")


@pytest.mark.parametrize("pipeline, num_steps, frames", [(DIFFUSION, 4, 4), (AUTOREGRESSIVE, 4, 8)])
def test_generate_streams_the_process_then_returns_the_images(client, pipeline, num_steps, frames):
    job = client.submit(pipeline, "Trouser", 2, num_steps, 2.0, 1.0, 7, "", api_name="/generate")
    path, status = job.result(timeout=120)
    outputs = job.outputs()
    # one picture per diffusion step / per row of codes of the autoregressive prior, then the final images
    assert len(outputs) == frames + 1 and status.startswith("done: 2 images")
    assert [text for _, text in outputs[:2]] == (["step 1 of 4", "step 2 of 4"] if pipeline == DIFFUSION
                                                 else ["row 1 of 8", "row 2 of 8"])  # fmt: skip
    final = picture(path)
    assert final.shape == (36 * 4, (2 * 34 + 2) * 4)  # two 32-pixel images side by side, enlarged 4×
    assert final.std() > 20  # real garments, not a blank
    again, _ = client.predict(pipeline, "Trouser", 2, num_steps, 2.0, 1.0, 7, "", api_name="/generate")
    assert np.array_equal(picture(again), final)  # the seed fixes the images
    other, _ = client.predict(pipeline, "Trouser", 2, num_steps, 2.0, 1.0, 8, "", api_name="/generate")
    assert not np.array_equal(picture(other), final)


def test_reconstruct_returns_the_code_map_the_reconstruction_and_its_psnr(client, models, example):
    code_map_path, comparison_path, value = client.predict(handle_file(example), api_name="/reconstruct")
    assert picture(code_map_path).shape == (8 * 32, 8 * 32)  # the 8×8 code grid, 32 pixels a cell
    assert picture(comparison_path).shape == (36 * 8, (2 * 34 + 2) * 8)  # input | reconstruction, enlarged 8×
    tokenizer = models.tokenizer
    with Image.open(example) as image:
        pixels = image_to_tensor(image, 32, 1)[None]
    with torch.no_grad():
        expected = float(psnr(tokenizer.detokenize(tokenizer.tokenize(pixels)).clamp(-1, 1), pixels))
    assert 22 < value < 40 and value == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize("pipeline", [DIFFUSION, AUTOREGRESSIVE])
def test_completion_keeps_the_top_rows(client, pipeline, example):
    editor = {"background": handle_file(example), "layers": [], "composite": None, "id": None}
    path, status = client.predict(pipeline, editor, KEEP_ROWS, 4, UNCONDITIONAL, 3, 4, 0, api_name="/inpaint")
    result = picture(path)
    assert status.startswith("done: 3 images")
    assert result.shape == (36 * 4, (4 * 34 + 2) * 4)  # the kept input and 3 completions, enlarged 4×
    kept, *completions = [result[8:136, 8 + 136 * k : 136 + 136 * k] for k in range(4)]
    assert kept[:64].std() > 10 and np.all(kept[64:] == 128)  # the top 4 of 8 rows of codes kept, grey below
    top_differences = [np.abs(c[:56] - kept[:56]).mean() for c in completions]
    bottom_differences = [np.abs(c[72:] - completions[0][72:]).mean() for c in completions[1:]]
    assert max(top_differences) < 25 and min(bottom_differences) > 5  # the same top, different bottoms


def test_inpainting_regenerates_the_drawn_region_with_diffusion_only(client, example, tmp_path):
    layer = np.zeros((256, 256, 4), dtype=np.uint8)
    layer[128:, 128:] = (255, 0, 0, 255)  # the bottom-right quarter, drawn over in red
    Image.fromarray(layer, "RGBA").save(tmp_path / "layer.png")
    editor = {"background": handle_file(example), "layers": [handle_file(str(tmp_path / "layer.png"))],
              "composite": None, "id": None}  # fmt: skip
    path, status = client.predict(DIFFUSION, editor, DRAWN_MASK, 0, "Bag", 2, 4, 0, api_name="/inpaint")
    result = picture(path)
    kept = result[8:136, 8:136]
    assert status.startswith("done: 2 images") and result.shape == (36 * 4, (3 * 34 + 2) * 4)
    grey_cells = (kept.reshape(8, 16, 8, 16) == 128).all(axis=(1, 3))  # code cells of 4 pixels, enlarged 4×
    assert np.array_equal(grey_cells, np.arange(8)[:, None] // 4 * (np.arange(8) // 4) == 1)  # the drawn quarter
    with pytest.raises(AppError, match="reading order"):
        client.predict(AUTOREGRESSIVE, editor, DRAWN_MASK, 0, "Bag", 2, 4, 0, api_name="/inpaint")
    empty = {**editor, "layers": []}
    with pytest.raises(AppError, match="Draw over the parts"):
        client.predict(DIFFUSION, empty, DRAWN_MASK, 0, "Bag", 2, 4, 0, api_name="/inpaint")


def test_app_py_builds_the_demo_from_the_shipped_checkpoints():
    namespace = runpy.run_path(str(ROOT / "app.py"))  # what a Space runs, without launching it
    assert isinstance(namespace["demo"], gr.Blocks)
    assert namespace["demo"].title == "vq_hub demo"


def test_models_must_be_pipelines_or_tokenizers(capsys, tmp_path):
    with pytest.raises(ValueError, match="class_names` has 2 names for 10 classes"):
        load_models([ROOT / "checkpoints" / DIFFUSION], class_names=["a", "b"])
    assert main(["demo", "--model", str(tmp_path)]) == 1
    assert "is neither a pipeline (model_index.json) nor a tokenizer" in capsys.readouterr().err


def test_a_tokenizer_alone_serves_the_reconstruct_tab(example):
    models = load_models([ROOT / "checkpoints" / "fashion-mnist-vqvae"])
    assert models.pipelines == {} and models.class_names == [] and models.tokenizer_name == "fashion-mnist-vqvae"
    assert isinstance(build_demo(models), gr.Blocks)
    with Image.open(example) as image:
        code_map_picture, comparison, value = reconstruct(models, image)
    assert code_map_picture.size == (256, 256) and comparison.size == ((2 * 34 + 2) * 8, 36 * 8) and value > 22


def test_space_requirements_match_the_package():
    """A Space installs requirements.txt, not pyproject.toml: the two must list the same packages and versions."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    requirements = [line for line in lines if line and not line.startswith("#")]
    assert sorted(requirements) == sorted(project["dependencies"] + project["optional-dependencies"]["demo"])


def test_the_two_level_pipeline_is_served(models, example):
    """The demo loaded the shipped VQ-VAE-2 pipeline and then failed (codes must be a pair; no `codebook_size`)."""
    from vq_hub.demo import generate, inpaint

    name = "fashion-mnist-vqvae2"
    assert name in models.pipelines  # served by default
    *_, (grid, status) = generate(models, name, "Bag", 2, 4, 2.0, 1.0, 0)
    assert status == "done: 2 images, VQHierarchicalPipeline" and grid.size == ((2 * 34 + 2) * 4, 36 * 4)
    assert np.asarray(grid.convert("L")).std() > 20
    with Image.open(example) as image:
        editor = {"background": image.copy(), "layers": []}
    for rows in (0, 4):  # 0 (the slider's minimum) resamples every bottom code
        *_, (result, status) = inpaint(models, name, editor, KEEP_ROWS, rows, UNCONDITIONAL, 2, 4, 0)
        assert status == "done: 2 images, VQHierarchicalPipeline"
    with pytest.raises(gr.Error, match="reading order"):
        list(inpaint(models, name, {**editor, "layers": [Image.new("RGBA", (32, 32), (255, 0, 0, 255))]},
                     DRAWN_MASK, 0, UNCONDITIONAL, 2, 4, 0))  # fmt: skip
    two_level = load_models([ROOT / "checkpoints" / name])
    assert type(two_level.tokenizer).__name__ == "HierarchicalVQModel"
    with Image.open(example) as image:
        maps, comparison, value = reconstruct(two_level, image)
    assert maps.size == (2 * 256 + 8, 256) and value > 20  # top and bottom code maps, side by side
