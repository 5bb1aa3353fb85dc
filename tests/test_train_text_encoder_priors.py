"""Training cross-attention text-to-image priors from the scripts: a small encoder trained from scratch, and a
pretrained-format (tiny random) CLIP / T5 encoder loaded by path, frozen, its states computed once per caption; both
save a pipeline that loads and samples."""

import json
from pathlib import Path

import pytest
import torch
from conftest import load_example, run_script
from test_train_text_priors import TINY_TEXT_PRIOR, scenes  # noqa: F401  (the module's fixture)

from vq_hub import VQAutoregressiveTextEncoderPipeline, VQDiscreteDiffusionTextEncoderPipeline, VQPipeline
from vq_hub.text import train_caption_tokenizer
from vq_hub.text_encoders import make_text_encoder

CAPTIONS = ["a red bag on the left", "green trousers to the left of a blue sneaker", "a blue bag on the right"]


def pretrained_folder(folder: Path, encoder_type: str, captions: list[str]) -> Path:
    """A tiny random encoder of `encoder_type` with its tokenizer, saved as a pretrained one is."""
    tokenizer = train_caption_tokenizer(captions, max_length=24)
    torch.manual_seed(0)
    make_text_encoder(encoder_type, len(tokenizer), hidden_size=32, num_layers=1, num_heads=2,
                      max_length=24).save_pretrained(folder)  # fmt: skip
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("script, pipeline_class, text_flags", [
    ("train_prior.py", VQAutoregressiveTextEncoderPipeline, ["--text_encoder_type", "t5"]),
    ("train_diffusion.py", VQDiscreteDiffusionTextEncoderPipeline, ["--text_encoder_name_or_path", "PRETRAINED"]),
])  # fmt: skip
def test_text_encoder_priors_train_and_save_a_pipeline(scenes, tmp_path, script, pipeline_class, text_flags):  # noqa: F811
    import pyarrow.parquet as pq

    if "PRETRAINED" in text_flags:
        captions = pq.read_table(scenes / "scenes" / "train.parquet")["caption"].to_pylist()
        captions += pq.read_table(scenes / "scenes" / "test.parquet")["caption"].to_pylist()
        text_flags = [text_flags[0], str(pretrained_folder(tmp_path / "clip", "clip_text_model", captions))]
    output = tmp_path / "prior"
    extra = ["--num_steps", "2", "--num_train_timesteps", "20"] if script == "train_diffusion.py" else []
    run_script(script, TINY_TEXT_PRIOR + text_flags + extra + [
        "--codes_dir", str(scenes / "codes"), "--output_dir", str(output), "--max_train_steps", "12",
        "--learning_rate", "3e-3", "--log_steps", "4", "--validation_steps", "12", "--checkpointing_steps", "1000",
        "--guidance_scale", "2",
    ])  # fmt: skip
    summary = json.loads((output / "training_summary.json").read_text())
    losses = [entry["loss"] for entry in summary["history"] if "loss" in entry]
    assert summary["steps"] == 12 and losses[-1] < losses[0], losses
    index = json.loads((output / "model_index.json").read_text())
    encoder_class = "T5EncoderModel" if "t5" in text_flags else "CLIPTextModel"
    assert index["text_encoder"] == ["transformers", encoder_class] and index["_class_name"] == pipeline_class.__name__
    pipe = VQPipeline.from_pretrained(output)
    assert type(pipe) is pipeline_class
    pipe.set_progress_bar_config(disable=True)
    kwargs = {"num_steps": 2} if script == "train_diffusion.py" else {}
    images = pipe(prompt=["a red bag on the left", ""], num_images_per_prompt=2, guidance_scale=3.0, **kwargs).images
    assert len(images) == 4 and images[0].size == (64, 32)
    if "--text_encoder_name_or_path" in text_flags:  # frozen: saved as it was loaded
        frozen = pipe.text_encoder.state_dict()
        original = type(pipe.text_encoder).from_pretrained(text_flags[1]).state_dict()
        assert all(torch.equal(frozen[key], original[key]) for key in original)


def test_a_frozen_encoder_runs_once_per_distinct_caption_and_dropout_picks_the_empty_caption():
    conditioning = load_example("text_encoder_conditioning")
    tokenizer = train_caption_tokenizer(CAPTIONS)
    encoder = make_text_encoder("bert", len(tokenizer), hidden_size=32, num_layers=1, num_heads=2, max_length=16)
    calls = []
    encoder.register_forward_hook(lambda module, inputs, output: calls.append(1))
    states = conditioning.CaptionStates(encoder, tokenizer, CAPTIONS * 50, trained=False, device="cpu")
    assert len(calls) == 1 and states.states.shape[0] == 4 and states.empty_index == 3  # 3 captions and ""

    class Recorder(torch.nn.Module):
        config = type("Config", (), {"is_decoder": False})()

        def forward(self, **inputs):
            self.inputs = inputs
            return inputs

    prior = conditioning.TextConditionedPrior(Recorder(), states)
    assert not any(p is q for p in prior.parameters() for q in encoder.parameters())  # a frozen encoder stays out
    torch.manual_seed(0)
    indices = torch.zeros(4000, dtype=torch.long)
    inputs = prior(input_ids=torch.zeros(4000, 3, dtype=torch.long), caption_index=indices, caption_dropout=0.25)
    assert len(calls) == 1  # no pass of the encoder while training
    empty = (inputs["encoder_attention_mask"].sum(1) == 1) & (inputs["encoder_hidden_states"][:, 0] ==
                                                               states.states[3, 0]).all(1)  # fmt: skip
    assert abs(float(empty.float().mean()) - 0.25) < 0.03


def test_rephrased_captions_name_the_same_slots_in_templates_training_never_used():
    evaluation = load_example("evaluate_text_to_image")
    scenes = load_example("make_captioned_scenes")
    slots = [(["t-shirt", "bag"], ["red", "blue"]), (["", "trousers"], ["", "green"])]
    for index in range(6):
        for items, colours in slots:
            caption = evaluation.rephrased_caption(items, colours, index)
            for item, colour in zip(items, colours):
                assert not item or f"{colour} {item}" in caption
            training = {scenes.caption_of([(c, i) if i else None for i, c in zip(items, colours)], template)
                        for template in range(len(scenes.PAIR_TEMPLATES if all(items) else scenes.SINGLE_TEMPLATES))}
            assert caption not in training
