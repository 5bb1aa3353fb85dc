"""The shipped VQ-VAE-2 pipeline: pinned components, class-conditional samples of both levels, the README's figures."""

import json

import torch
from conftest import ROOT

from vq_hub import HierarchicalVQModel, VQHierarchicalPipeline, VQPipeline

PIPELINE = ROOT / "checkpoints" / "fashion-mnist-vqvae2"


def test_shipped_model_index_is_pinned():
    index = json.loads((PIPELINE / "model_index.json").read_text())
    assert {k: v for k, v in index.items() if k not in ("_diffusers_version", "_name_or_path")} == {
        "_class_name": "VQHierarchicalPipeline", "top_prior": ["transformers", "GPT2LMHeadModel"],
        "bottom_prior": ["transformers", "GPT2LMHeadModel"], "scheduler": [None, None],
        "vqvae": ["vq_hub", "HierarchicalVQModel"],
    }  # fmt: skip


def test_shipped_pipeline_samples_both_levels_per_class_and_the_bottom_follows_the_top():
    pipe = VQPipeline.from_pretrained(PIPELINE)
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe) is VQHierarchicalPipeline and type(pipe.vqvae) is HierarchicalVQModel
    output = pipe(class_labels=[0, 7], guidance_scale=2.0, generator=torch.Generator().manual_seed(0))
    top, bottom = output.codes
    assert top.shape == (2, 4, 4) and bottom.shape == (2, 8, 8) and output.images[0].size == (32, 32)
    # The same seed with the top grids swapped between the two images: the bottom codes change with the top.
    swapped = pipe(class_labels=[0, 7], guidance_scale=2.0, top_codes=top.flip(0), output_type="codes",
                   generator=torch.Generator().manual_seed(0)).codes[1]  # fmt: skip
    assert (swapped != bottom).float().mean() > 0.3
