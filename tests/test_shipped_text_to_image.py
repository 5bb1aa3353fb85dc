"""The shipped text-to-image pipeline draws what its prompts say, read by the shipped slot classifier."""

import json

import pytest
import torch
from conftest import ROOT, load_example

from vq_hub import VQDiscreteDiffusionTextToImagePipeline, VQPipeline
from vq_hub.evaluation import ImageClassifier
from vq_hub.evaluation.composition import faithfulness, read_scenes

PIPELINE = ROOT / "checkpoints" / "scenes-text-to-image"
CLASSIFIER = ROOT / "checkpoints" / "scenes-slot-classifier"


@pytest.fixture(scope="module")
def pipe() -> VQDiscreteDiffusionTextToImagePipeline:
    pipe = VQPipeline.from_pretrained(PIPELINE)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_shipped_model_index_is_pinned():
    index = json.loads((PIPELINE / "model_index.json").read_text())
    assert {k: v for k, v in index.items() if k not in ("_diffusers_version", "_name_or_path")} == {
        "_class_name": "VQDiscreteDiffusionTextToImagePipeline", "denoiser": ["transformers", "BertForMaskedLM"],
        "scheduler": ["vq_hub", "DiscreteDiffusionScheduler"], "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "vqvae": ["vq_hub", "VQVAEModel"],
    }  # fmt: skip


@pytest.mark.parametrize(
    "prompt, items, colours, floor",
    [
        # seen in training: 16 of 16 scenes right with seeds 0 and 1 here
        ("a red sneaker to the left of a blue bag", ["sneaker", "bag"], ["red", "blue"], 0.75),
        # held out of training (no green t-shirt was ever seen): 10 and 7 of 16 here; chance is under 1 in 30
        ("a green t-shirt on the left", ["t-shirt", ""], ["green", ""], 0.25),
    ],
)
def test_shipped_pipeline_draws_the_prompt(pipe, prompt, items, colours, floor):
    palette = load_example("make_captioned_scenes").COLOURS
    classifier = ImageClassifier.from_pretrained(CLASSIFIER).eval()
    images = pipe(prompt=[prompt], num_images_per_prompt=16, guidance_scale=3.0, num_steps=16, output_type="pt",
                  generator=torch.Generator().manual_seed(0)).images  # fmt: skip
    assert type(pipe) is VQDiscreteDiffusionTextToImagePipeline and images.shape == (16, 3, 32, 64)
    read_items, read_colours, _ = read_scenes(images * 2 - 1, classifier, palette)
    scores = faithfulness(read_items, read_colours, [items] * 16, [colours] * 16)
    assert scores["scenes"] >= floor, (scores, read_items, read_colours)
