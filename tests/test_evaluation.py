"""The evaluation harness and `vq-hub evaluate` with the shipped feature network, tokenizer and pipelines."""

import json

import pytest
import torch
from conftest import ROOT

from vq_hub import VQPipeline, VQVAEModel
from vq_hub.cli import main
from vq_hub.data import image_to_tensor, shipped_fashion_mnist
from vq_hub.evaluation import (
    ImageClassifier,
    ReferenceStatistics,
    evaluate_tokenizer,
    extract_features,
    find_feature_network,
    load_feature_network,
    score_images,
)  # fmt: skip

CHECKPOINTS = ROOT / "checkpoints"
CLASSIFIER = CHECKPOINTS / "fashion-mnist-classifier"
TOKENIZER = str(CHECKPOINTS / "fashion-mnist-vqvae")
DIFFUSION = str(CHECKPOINTS / "fashion-mnist-diffusion")
AUTOREGRESSIVE = str(CHECKPOINTS / "fashion-mnist-autoregressive")


@pytest.fixture(scope="module")
def fashion():
    """The 1,000 shipped Fashion-MNIST train images (padded to 32×32, [-1, 1]) and labels."""
    import pyarrow.parquet as pq

    from vq_hub.cli._common import read_images

    images, labels = read_images(str(shipped_fashion_mnist()), None, 0)
    assert pq.read_table(shipped_fashion_mnist()).num_rows == 1000
    return torch.stack([image_to_tensor(image, 32, 1) for image in images]), torch.tensor(labels)


@pytest.fixture(scope="module")
def network():
    return load_feature_network(CLASSIFIER)


def test_shipped_feature_networks_load_offline_with_their_reference():
    for folder, channels, dataset in [(CLASSIFIER, 1, "fashion-mnist"),
                                      (CHECKPOINTS / "cifar10-classifier", 3, "cifar10")]:  # fmt: skip
        assert find_feature_network(channels, 32) == folder
        network = load_feature_network(folder)
        config = network.classifier.config
        assert (config.in_channels, config.sample_size, config.num_classes, config.dataset) == (
            channels,
            32,
            10,
            dataset,
        )
        assert network.reference.num_images == 10000 and network.reference.info["split"] == "test"
        assert network.reference.mean.dtype == torch.float64 and len(network.reference.features) == 2000
        card = (folder / "README.md").read_text()
        assert "Test accuracy" in card and "train_classifier.py" in card
    with pytest.raises(FileNotFoundError, match="no shipped feature network for 3-channel 64×64"):
        find_feature_network(3, 64)


def test_classifier_accuracy_on_shipped_train_images(fashion, network):
    images, labels = fashion
    _, logits = extract_features(network.classifier, images)
    assert (logits.argmax(1) == labels).double().mean() > 0.85  # 87.6% on the test split


@pytest.mark.slow
def test_sanity_ordering_same_data_reconstructions_noise(fashion, network):
    """Half of the data against the other half: small FID; the tokenizer's reconstructions: larger; noise: far."""
    images, labels = fashion
    first, second = images[::2], images[1::2]
    reference = ReferenceStatistics.from_features(extract_features(network.classifier, first)[0])
    same = score_images(second, network, reference, labels[1::2])
    tokenizer = VQVAEModel.from_pretrained(TOKENIZER).eval()
    with torch.no_grad():
        reconstructions = tokenizer.detokenize(tokenizer.tokenize(second)).clamp(-1, 1)
    rebuilt = score_images(reconstructions, network, reference, labels[1::2])
    noise = score_images(torch.rand_like(second) * 2 - 1, network, reference)
    assert same["fid"] < rebuilt["fid"] < noise["fid"]
    assert noise["fid"] > 10 * same["fid"]
    assert same["kid"] < rebuilt["kid"] < noise["kid"]
    assert same["precision"] > 0.5 and noise["precision"] < 0.05
    assert same["class_accuracy"] > 0.85


@pytest.mark.slow
def test_sanity_ordering_against_the_shipped_test_statistics(fashion, network):
    """Train images against the shipped test-split reference: the same distribution, a small FID; reconstructions
    sit between them and noise."""
    images = fashion[0][:500]
    tokenizer = VQVAEModel.from_pretrained(TOKENIZER).eval()
    with torch.no_grad():
        reconstructions = tokenizer.detokenize(tokenizer.tokenize(images)).clamp(-1, 1)
    fid = {name: score_images(batch, network)["fid"] for name, batch in
           [("train", images), ("reconstructions", reconstructions), ("noise", torch.rand_like(images) * 2 - 1)]}  # fmt: skip
    assert fid["train"] < fid["reconstructions"] < fid["noise"]
    assert fid["noise"] > 10 * fid["train"]


def test_evaluate_tokenizer_reports_reconstruction_figures(fashion, network):
    images, labels = fashion
    tokenizer = VQVAEModel.from_pretrained(TOKENIZER).eval()
    report = evaluate_tokenizer(tokenizer, images[:200], network, labels[:200], progress=False)
    assert 0 < report["rfid"] and 24 < report["psnr"] < 32 and 0.8 < report["ssim"] <= 1
    assert 0.3 < report["codebook_usage"] <= 1 and report["perplexity"] > 50
    assert report["feature_network"]["name"] == "fashion-mnist-classifier" and report["fid_inception"] is None
    with pytest.raises(ValueError, match=r"\(N, 1, 32, 32\)"):
        evaluate_tokenizer(tokenizer, images[:4, :, :16, :16], network)


def test_a_tokenizer_whose_sample_size_is_a_list_is_evaluated(fashion, tmp_path):
    """`train_vqgan.py --resolution H W` saves `sample_size` as a JSON list: rFID validation once failed on it
    (unhashable type: 'list'); a non-square size, with no shipped network for it, gets a clear FileNotFoundError."""
    images, labels = fashion
    tokenizer = VQVAEModel.from_pretrained(TOKENIZER)
    tokenizer.register_to_config(sample_size=[32, 32])
    tokenizer.save_pretrained(tmp_path / "listed")
    listed = VQVAEModel.from_pretrained(tmp_path / "listed").eval()
    assert listed.config.sample_size == [32, 32]
    report = evaluate_tokenizer(listed, images[:20], None, labels[:20], progress=False)
    assert report["feature_network"]["name"] == "fashion-mnist-classifier" and report["rfid"] > 0
    listed.register_to_config(sample_size=[32, 64])
    with pytest.raises(FileNotFoundError, match="no shipped feature network for 1-channel 32×64 images"):
        evaluate_tokenizer(listed, torch.zeros(6, 1, 32, 64), None, progress=False)


def test_evaluate_tokenizer_reports_codebook_figures_per_level_of_a_two_level_tokenizer(fashion, network):
    from test_hierarchical_vq_model import tiny_hierarchical_config

    from vq_hub import HierarchicalVQModel
    from vq_hub.code_levels import tokenize_levels
    from vq_hub.metrics import code_counts, codebook_usage

    images, labels = fashion
    torch.manual_seed(0)
    tokenizer = HierarchicalVQModel(**tiny_hierarchical_config(in_channels=1, out_channels=1, sample_size=32)).eval()
    report = evaluate_tokenizer(tokenizer, images[:40], network, labels[:40], progress=False)
    with torch.no_grad():
        top, bottom = tokenize_levels(tokenizer, images[:40])
    assert report["top_codebook_usage"] == pytest.approx(float(codebook_usage(code_counts(top, 16))))
    assert report["bottom_codebook_usage"] == pytest.approx(float(codebook_usage(code_counts(bottom, 32))))
    assert report["top_perplexity"] > 1 and report["bottom_perplexity"] > 1 and "codebook_usage" not in report
    assert report["tokenizer"] == "HierarchicalVQModel" and report["rfid"] > 0


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_cli_evaluates_a_diffusion_sweep_and_writes_json(capsys, tmp_path):
    out = tmp_path / "report.json"
    code, stdout, stderr = run(capsys, "evaluate", "--model", DIFFUSION, "--num-images", "20", "--num-steps", "2", "3",
                               "--guidance-scale", "1", "--batch-size", "10", "--out", str(out))  # fmt: skip
    assert code == 0, stderr
    assert "fashion-mnist-classifier" in stdout and "| steps | guidance |" in stdout and f"wrote {out}" in stdout
    assert "sampling" in stderr  # the progress bar
    report = json.loads(out.read_text())
    assert [row["num_steps"] for row in report["results"]] == [2, 3]
    row = report["results"][0]
    assert row["num_images"] == 20 and row["seed"] == 0 and row["guidance_scale"] == 1.0
    for key in ("fid", "kid", "precision", "recall", "class_accuracy", "seconds_per_image"):
        assert isinstance(row[key], float)
    assert row["feature_network"]["kind"].startswith("vq_hub ImageClassifier") and row["reference"]["split"] == "test"
    # Same seed, same images, same figures.
    run(capsys, "evaluate", "--model", DIFFUSION, "--num-images", "20", "--num-steps", "2", "--guidance-scale", "1",
        "--batch-size", "10", "--out", str(tmp_path / "again.json"))  # fmt: skip
    assert json.loads((tmp_path / "again.json").read_text())["results"][0]["fid"] == row["fid"]


@pytest.mark.slow
def test_cli_evaluates_autoregressive_and_tokenizer(capsys, tmp_path):
    code, stdout, stderr = run(capsys, "evaluate", "--model", AUTOREGRESSIVE, "--num-images", "10", "--top-k", "50",
                               "--no-progress", "--out", str(tmp_path / "ar.json"))  # fmt: skip
    assert code == 0, stderr
    assert json.loads((tmp_path / "ar.json").read_text())["results"][0]["top_k"] == 50
    code, stdout, stderr = run(capsys, "evaluate", "--model", TOKENIZER, "--images", str(shipped_fashion_mnist()),
                               "--num-images", "50", "--out", str(tmp_path / "tok.json"))  # fmt: skip
    assert code == 0, stderr
    assert "| rFID |" in stdout and "PSNR" in stdout
    row = json.loads((tmp_path / "tok.json").read_text())["results"][0]
    assert row["num_images"] == 50 and row["psnr"] > 24


def test_a_tokenizer_is_scored_on_the_shipped_images_by_default(capsys, tmp_path):
    """`vq-hub evaluate --help` pointed to ../shared/data/…, which a fresh clone has not."""
    code, stdout, stderr = run(capsys, "evaluate", "--model", TOKENIZER, "--num-images", "20", "--no-progress",
                               "--out", str(tmp_path / "tok.json"))  # fmt: skip
    assert code == 0 and "the 1,000 Fashion-MNIST images shipped with vq_hub" in stderr, stderr
    assert json.loads((tmp_path / "tok.json").read_text())["results"][0]["num_images"] == 20
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "../shared" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", AUTOREGRESSIVE, "--num-steps", "4"], "--num-steps applies to diffusion pipelines"),
        (["--model", DIFFUSION, "--top-k", "5"], "--top-k applies to autoregressive pipelines"),
        (["--model", TOKENIZER, "--images", "missing.parquet"], "--images missing.parquet: no such file"),
        (["--model", TOKENIZER, "--images", str(CHECKPOINTS)], "expected a Parquet file"),
        (["--model", DIFFUSION, "--out", "report.txt"], "--out report.txt: give a file name ending in .json"),
        (["--model", DIFFUSION, "--feature-network", "nowhere"], "--feature-network nowhere: "),
        (
            ["--model", DIFFUSION, "--feature-network", str(CHECKPOINTS / "cifar10-classifier"), "--num-images", "6"],
            "takes 3-channel 32×32 images, the model makes 1-channel",
        ),
    ],
)
def test_cli_errors_are_one_line(capsys, tmp_path, argv, message):
    code, _, stderr = run(capsys, "evaluate", *argv)
    assert code == 1 and message in stderr and len(stderr.strip().splitlines()) == 1


def test_score_images_refuses_a_network_without_reference(fashion):
    bare = ImageClassifier(in_channels=1, block_out_channels=(4, 8), layers_per_block=1)
    from vq_hub.evaluation import FeatureNetwork

    with pytest.raises(ValueError, match="has no reference statistics"):
        score_images(fashion[0][:10], FeatureNetwork(bare.eval(), None, "bare"))


def test_pipeline_figures_name_their_network(network):
    from vq_hub.evaluation import evaluate_pipeline

    pipe = VQPipeline.from_pretrained(DIFFUSION)
    report = evaluate_pipeline(pipe, network, num_images=10, batch_size=10, progress=False, num_steps=2,
                               guidance_scale=1.0)  # fmt: skip
    assert report["feature_network"]["name"] == "fashion-mnist-classifier"
    assert "not computed" in report["fid_inception_note"]
    with pytest.raises(FileNotFoundError, match="inception_weights"):
        evaluate_pipeline(pipe, network, num_images=10, progress=False, num_steps=2, inception_weights="nowhere.pth")


def test_quality_tables_average_the_seeds_and_plot_fid_against_time(tmp_path):
    """examples/quality_tables.py: rows of one configuration (two seeds) become mean ± half their spread; the plot
    names the device and threads the reports record."""
    from conftest import load_example

    def row(pipeline, steps, guidance, seed, fid, seconds):
        return {"pipeline": pipeline, "num_steps": steps, "guidance_scale": guidance, "temperature": 1.0, "seed": seed,
                "fid": fid, "precision": 0.9, "recall": 0.3, "class_accuracy": 0.8, "seconds_per_image": seconds,
                "num_images": 10, "num_reference_images": 20, "feature_network": {"name": "net"},
                "reference": {"split": "test"}, "device": "cpu", "torch_threads": 1}  # fmt: skip

    reports = {
        "ar.json": [row("VQAutoregressivePipeline", None, 2.0, 0, 2.0, 0.01), row("VQAutoregressivePipeline", None, 2.0, 1, 3.0, 0.03)],
        "diffusion.json": [row("VQDiscreteDiffusionPipeline", steps, 2.0, seed, 4.0 + steps, 0.1 * steps)
                           for steps in (4, 8) for seed in (0, 1)],
    }  # fmt: skip
    for name, results in reports.items():
        (tmp_path / name).write_text(json.dumps({"results": results}))
    table = load_example("quality_tables").main([str(tmp_path / name) for name in reports] +
                                                ["--plot", str(tmp_path / "plot.png")])  # fmt: skip
    lines = table.splitlines()
    assert lines[2] == "| autoregressive | – | 2 | 2.50 ± 0.50 | 0.900 ± 0.000 | 0.300 ± 0.000 | 0.800 ± 0.000 | 0.0200 ± 0.0100 |"
    assert lines[3].startswith("| diffusion | 4 | 2 | 8.00 ± 0.00 | ") and lines[4].startswith("| diffusion | 8 | 2 | 12.00 ± 0.00 |")
    assert "seeds 0, 1" in table and "Feature network: net" in table
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """12 captioned test scenes (with scenes.json) made from the shipped mini split."""
    from conftest import load_example

    folder = tmp_path_factory.mktemp("scenes")
    load_example("make_captioned_scenes").main([
        "--fashion_mnist_dir", str(ROOT / "src/vq_hub/assets/fashion_mnist_mini"), "--test_source", "train.parquet",
        "--output_dir", str(folder), "--num_train", "4", "--num_test", "12", "--num_heldout", "2",
    ])  # fmt: skip
    return folder


def test_cli_evaluates_a_text_to_image_pipeline_on_the_captions_of_a_split(capsys, tmp_path, scenes):
    """`vq-hub evaluate` on a text-to-image pipeline crashed (`__call__() got an unexpected keyword argument
    'batch_size'`); now: one image per caption, FID against the split's images, and the faithfulness figures."""
    out = tmp_path / "t2i.json"
    model = str(CHECKPOINTS / "scenes-text-to-image")
    assert main(["evaluate", "--model", model, "--images", str(scenes / "test.parquet"), "--num-images", "8",
                 "--num-steps", "4", "--guidance-scale", "3", "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "| FID | items | colours | positions | scenes | real scenes |" in printed
    result = json.loads(out.read_text())["results"][0]
    assert result["num_images"] == 8 and result["num_reference_images"] == 12 and result["fid"] > 0
    assert result["real_scenes"] >= 0.75 and 0 <= result["scenes"] <= 1  # the scorer reads the real scenes right
    assert result["feature_network"]["name"] == "scenes-slot-classifier"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red sneaker to the left of a blue bag\n\ngreen trousers on the left\n")
    assert main(["evaluate", "--model", model, "--images", str(scenes / "test.parquet"), "--prompts", str(prompts),
                 "--num-steps", "2", "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    result = json.loads(out.read_text())["results"][0]
    assert result["num_images"] == 2 and "items" not in result and "not computed" in result["faithfulness_note"]
    capsys.readouterr()
    assert main(["evaluate", "--model", model, "--out", str(out)]) == 1
    assert "text-to-image pipeline, scored against real images" in capsys.readouterr().err


def test_the_class_harness_names_the_text_to_image_evaluation():
    from vq_hub.evaluation import evaluate_pipeline

    pipe = VQPipeline.from_pretrained(CHECKPOINTS / "scenes-text-to-image")
    with pytest.raises(TypeError, match="evaluate_text_to_image"):
        evaluate_pipeline(pipe, num_images=2, progress=False)
