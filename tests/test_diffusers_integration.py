"""vq_hub as diffusers users meet it: `DiffusionPipeline.from_pretrained` returns our pipelines, no name collides with
a diffusers class, old folders still load, the diffusers idioms work, and the model cards' snippets run."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, put_in_hub_cache
from diffusers import DiffusionPipeline
from transformers import AutoModelForMaskedLM

import vq_hub
from vq_hub import (
    DiscreteDiffusionScheduler, VQAutoregressivePipeline, VQDiscreteDiffusionPipeline, VQPipeline, VQVAEModel,
    denoiser_config,
)  # fmt: skip

CHECKPOINTS = ROOT / "checkpoints"
SHIPPED = {"fashion-mnist-autoregressive": (VQAutoregressivePipeline, {}),
           "fashion-mnist-diffusion": (VQDiscreteDiffusionPipeline, {"num_steps": 4})}  # fmt: skip


def seeded_codes(pipe, **kwargs) -> torch.LongTensor:
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    return pipe(class_labels=[0, 5, 9], generator=generator, output_type="codes", **kwargs).codes


def test_no_vq_hub_class_shares_a_name_with_a_diffusers_class():
    """Checked against diffusers' own namespace, in an interpreter that never imported vq_hub (importing vq_hub adds
    its pipelines there under their own names)."""
    listing = subprocess.run([sys.executable, "-c", "import diffusers, json; print(json.dumps(dir(diffusers)))"],
                             capture_output=True, text=True, check=True, timeout=120)  # fmt: skip
    diffusers_names = set(json.loads(listing.stdout))
    ours = set(vq_hub.__all__) | set(VQPipeline._pipelines) - set(vq_hub.DEPRECATED_NAMES)
    assert {"VQModel", "VQDiffusionPipeline"} <= diffusers_names  # the names vq_hub 0.1 collided with
    assert ours & diffusers_names == set()


def test_the_old_names_are_deprecated_aliases():
    for old, new in vq_hub.DEPRECATED_NAMES.items():
        with pytest.warns(FutureWarning, match=f"vq_hub.{old}` is deprecated.*vq_hub.{new}"):
            assert getattr(vq_hub, old) is getattr(vq_hub, new)


def test_folders_saved_with_the_old_names_still_load(tmp_path):
    """A copy of a shipped checkpoint written as vq_hub 0.1 wrote it (class names VQDiffusionPipeline and VQModel)."""
    legacy = tmp_path / "legacy"
    shutil.copytree(CHECKPOINTS / "fashion-mnist-diffusion", legacy)
    index = json.loads((legacy / "model_index.json").read_text())
    index.update(_class_name="VQDiffusionPipeline", vqvae=["vq_hub", "VQModel"])
    (legacy / "model_index.json").write_text(json.dumps(index))
    config = json.loads((legacy / "vqvae" / "config.json").read_text())
    (legacy / "vqvae" / "config.json").write_text(json.dumps({**config, "_class_name": "VQModel"}))
    with pytest.warns(FutureWarning, match="vq_hub.VQModel` is deprecated"):
        pipe = VQPipeline.from_pretrained(legacy)
    assert type(pipe) is VQDiscreteDiffusionPipeline and type(pipe.vqvae) is VQVAEModel
    current = VQPipeline.from_pretrained(CHECKPOINTS / "fashion-mnist-diffusion")
    assert torch.equal(seeded_codes(pipe, num_steps=4), seeded_codes(current, num_steps=4))


def test_shipped_model_index_files_are_pinned():
    for name, denoiser in [("fashion-mnist-autoregressive", {"prior": ["transformers", "GPT2LMHeadModel"]}),
                           ("fashion-mnist-diffusion", {"denoiser": ["transformers", "BertForMaskedLM"],
                                                        "scheduler": ["vq_hub", "DiscreteDiffusionScheduler"]})]:  # fmt: skip
        index = json.loads((CHECKPOINTS / name / "model_index.json").read_text())
        assert {k: v for k, v in index.items() if k not in ("_diffusers_version", "_name_or_path")} == {
            "_class_name": SHIPPED[name][0].__name__, "vqvae": ["vq_hub", "VQVAEModel"], **denoiser}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_diffusers_own_loader_returns_our_pipeline_with_the_same_weights_and_samples(name):
    cls, kwargs = SHIPPED[name]
    ours = VQPipeline.from_pretrained(CHECKPOINTS / name)
    theirs = DiffusionPipeline.from_pretrained(CHECKPOINTS / name)
    assert type(theirs) is cls
    for component in ours.components:
        a, b = getattr(ours, component), getattr(theirs, component)
        if isinstance(a, torch.nn.Module):
            assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert torch.equal(seeded_codes(ours, **kwargs), seeded_codes(theirs, **kwargs))


def test_diffusers_own_loader_reads_hub_snapshots_offline(offline_hub_cache):
    for name, (cls, kwargs) in SHIPPED.items():
        put_in_hub_cache(CHECKPOINTS / name, f"vq-hub/{name}", offline_hub_cache)
        pipe = DiffusionPipeline.from_pretrained(f"vq-hub/{name}")
        assert type(pipe) is cls
        assert seeded_codes(pipe, **kwargs).shape == (3, 8, 8)


@pytest.fixture(scope="module")
def autoregressive() -> VQAutoregressivePipeline:
    return VQPipeline.from_pretrained(CHECKPOINTS / "fashion-mnist-autoregressive")


def test_diffusers_idioms_work(autoregressive, tmp_path):
    pipe = autoregressive
    assert set(pipe.components) == {"vqvae", "prior"}
    pipe.set_progress_bar_config(disable=True)
    assert pipe._progress_bar_config == {"disable": True}

    # from_pipe: a diffusion pipeline on the same tokenizer (shared, not copied).
    config = denoiser_config(pipe.vqvae, num_classes=10, hidden_size=32, num_layers=1, num_heads=2)
    scheduler = DiscreteDiffusionScheduler(20, pipe.vqvae.codebook_size, "mask", mask_token_id=config.mask_token_id)
    diffusion = VQDiscreteDiffusionPipeline.from_pipe(pipe, denoiser=AutoModelForMaskedLM.from_config(config),
                                                      scheduler=scheduler)  # fmt: skip
    assert type(diffusion) is VQDiscreteDiffusionPipeline and diffusion.vqvae is pipe.vqvae
    diffusion.set_progress_bar_config(disable=True)
    assert diffusion(num_steps=2, batch_size=2, output_type="codes").codes.shape == (2, 8, 8)

    # save → load through both loaders.
    diffusion.save_pretrained(tmp_path / "diffusion")
    for loader in (VQPipeline, DiffusionPipeline):
        loaded = loader.from_pretrained(tmp_path / "diffusion")
        assert type(loaded) is VQDiscreteDiffusionPipeline
        assert torch.equal(loaded.denoiser.cls.predictions.decoder.weight, diffusion.denoiser.cls.predictions.decoder.weight)


def test_to_device_and_dtype(tmp_path):
    pipe = VQPipeline.from_pretrained(CHECKPOINTS / "fashion-mnist-diffusion").to("cpu", torch.bfloat16)
    assert pipe.vqvae.dtype == torch.bfloat16 and pipe.denoiser.dtype == torch.bfloat16
    pipe.set_progress_bar_config(disable=True)
    images = pipe(num_steps=4, class_labels=[1, 2], output_type="pt").images
    assert images.shape == (2, 1, 32, 32) and torch.isfinite(images).all()


def test_model_cpu_offload_where_an_accelerator_exists(autoregressive):
    if not torch.cuda.is_available():
        pytest.skip("enable_model_cpu_offload needs an accelerator (CUDA): none on this machine")
    autoregressive.enable_model_cpu_offload()
    assert seeded_codes(autoregressive).shape == (3, 8, 8)


def python_blocks(card: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card, flags=re.DOTALL)


@pytest.mark.parametrize(
    "name",
    [
        "fashion-mnist-autoregressive", "fashion-mnist-diffusion", "fashion-mnist-vqvae", "fashion-mnist-vqvae2",
        "scenes-text-to-image",
    ],
)  # fmt: skip
def test_every_shipped_card_snippet_runs_as_written(name, monkeypatch):
    card = (CHECKPOINTS / name / "README.md").read_text()
    assert "pypi.org" not in card and "not published on PyPI" in card
    blocks = python_blocks(card)
    assert len(blocks) == 1
    if name != "fashion-mnist-vqvae":
        assert "DiffusionPipeline.from_pretrained" in blocks[0]
        what = "text-to-image" if name == "scenes-text-to-image" else "class-conditional"
        assert re.search(rf"^tags:\n(- .*\n)*- {what}$", card, flags=re.MULTILINE)
    monkeypatch.chdir(ROOT)
    namespace = {}
    exec(compile(blocks[0], f"{name}/README.md", "exec"), namespace)  # noqa: S102 — our own card
    assert "images" in namespace or "reconstruction" in namespace
