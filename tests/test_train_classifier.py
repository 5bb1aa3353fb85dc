"""examples/train_classifier.py end to end, and the FID figures the training scripts log with its classifier
(subprocesses; tiny models, synthetic 16×16 images)."""

import json

import pytest
from conftest import run_script
from test_train_priors import TINY_PRIOR, encoded  # noqa: F401 (a fixture)
from test_train_vqgan import TINY_MODEL, data_args

from vq_hub.evaluation import ImageClassifier, load_feature_network


@pytest.fixture(scope="module")
def classifier(synthetic_parquet, tmp_path_factory):
    """A classifier trained a few steps on the synthetic train split, with the statistics of its test split."""
    output = tmp_path_factory.mktemp("classifier") / "toy-classifier"
    run_script("train_classifier.py", [
        "--train_parquet", str(synthetic_parquet / "train.parquet"),
        "--validation_parquet", str(synthetic_parquet / "test.parquet"), "--resolution", "16", "--in_channels", "3",
        "--dataset", "toy", "--block_out_channels", "8", "16", "--layers_per_block", "1", "--random_flip",
        "--train_batch_size", "16", "--max_train_steps", "12", "--learning_rate", "1e-2", "--lr_warmup_steps", "0",
        "--validation_steps", "6", "--checkpointing_steps", "6", "--report_to", "none", "--output_dir", str(output),
        "--mixed_precision", "bf16",  # bf16 autocast, as on a GPU
    ])  # fmt: skip
    return output


@pytest.mark.slow
def test_train_classifier_writes_a_feature_network_with_reference_and_card(classifier):
    network = load_feature_network(classifier)
    config = network.classifier.config
    assert (config.in_channels, config.sample_size, config.dataset) == (3, 16, "toy")
    assert config.class_names == ["red", "green", "blue"]  # read from the Parquet file's ClassLabel
    assert network.reference.num_images == 16 and network.reference.info["split"] == "test"
    assert network.reference.labels.tolist() == [i % 3 for i in range(16)]
    summary = json.loads((classifier / "training_summary.json").read_text())
    assert summary["steps"] == 12 and 0 <= summary["validation"]["accuracy"] <= 1
    card = (classifier / "README.md").read_text()
    assert f"**{summary['validation']['accuracy']:.2%}** on 16 test images" in card
    assert "train split only" in card and "--max_train_steps 12" in card
    assert isinstance(ImageClassifier.from_pretrained(classifier), ImageClassifier)


@pytest.mark.slow
def test_prior_training_logs_sample_fid(encoded, classifier, tmp_path):  # noqa: F811
    output = tmp_path / "diffusion"
    result = run_script("train_diffusion.py", [
        "--codes_dir", str(encoded / "codes"), "--max_train_steps", "4", "--validation_steps", "2",
        "--checkpointing_steps", "100", "--num_steps", "2", "--feature_network", str(classifier),
        "--fid_num_images", "12", "--output_dir", str(output), *TINY_PRIOR,
    ])  # fmt: skip
    assert "sample quality (toy-classifier)" in result.stderr
    summary = json.loads((output / "training_summary.json").read_text())
    assert summary["sample_quality"]["feature_network"] == "toy-classifier"
    assert summary["sample_quality"]["fid"] > 0 and 0 <= summary["sample_quality"]["class_accuracy"] <= 1
    assert [row["step"] for row in summary["history"] if "sample_fid" in row] == [2, 4]
    without = run_script("train_prior.py", ["--codes_dir", str(encoded / "codes"), "--max_train_steps", "1",
                                            "--output_dir", str(tmp_path / "ar"), *TINY_PRIOR])  # fmt: skip
    assert "sample FID is not logged: pass --feature_network" in without.stderr


@pytest.mark.slow
def test_tokenizer_training_logs_rfid(synthetic_parquet, classifier, tmp_path):
    run_script("train_vqgan.py", data_args(synthetic_parquet) + TINY_MODEL + [
        "--output_dir", str(tmp_path / "vqgan"), "--max_train_steps", "4", "--validation_steps", "2", "--vqvae",
        "--checkpointing_steps", "100", "--in_channels", "3", "--feature_network", str(classifier),
        "--fid_num_images", "12",
    ])  # fmt: skip
    validation = json.loads((tmp_path / "vqgan" / "training_summary.json").read_text())["validation"]
    assert validation["rfid"] > 0 and 0 <= validation["precision"] <= 1
