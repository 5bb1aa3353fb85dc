"""The metrics of vq_hub.evaluation against values computed by hand on small sets."""

import math

import pytest
import torch

from vq_hub.evaluation import (
    ImageClassifier,
    ReferenceStatistics,
    class_accuracy,
    classifier_score,
    extract_features,
    frechet_distance,
    kernel_distance,
    precision_recall,
)  # fmt: skip


def whitened(n: int, d: int, seed: int) -> torch.Tensor:
    """n points in d dimensions whose sample mean is exactly 0 and sample covariance exactly the identity."""
    z = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    z = z - z.mean(0)
    chol = torch.linalg.cholesky(z.T @ z / (n - 1))
    return z @ torch.linalg.inv(chol).T


def test_fid_of_gaussians_matches_the_closed_form():
    # A = μa + Z·diag(σa), B = μb + Z'·diag(σb): diagonal covariances commute, so
    # FID = ‖μa − μb‖² + Σ (σa − σb)².
    d = 6
    mu_a, mu_b = torch.arange(d, dtype=torch.float64), torch.linspace(1, -1, d, dtype=torch.float64)
    sigma_a, sigma_b = (
        torch.linspace(0.5, 2.0, d, dtype=torch.float64),
        torch.linspace(1.5, 0.2, d, dtype=torch.float64),
    )
    a = mu_a + whitened(400, d, 0) * sigma_a
    b = mu_b + whitened(300, d, 1) * sigma_b
    expected = float((mu_a - mu_b).pow(2).sum() + (sigma_a - sigma_b).pow(2).sum())
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    # From stored statistics (what vq-hub evaluate ships) the figure is the same.
    assert frechet_distance(ReferenceStatistics.from_features(a), b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(a, a.clone()) == pytest.approx(0.0, abs=1e-8)


def test_fid_of_a_shift_is_the_squared_shift():
    a = whitened(200, 4, 2)
    assert frechet_distance(a, a + torch.tensor([3.0, 0, 0, -4.0], dtype=torch.float64)) == pytest.approx(25.0)


def test_kid_matches_the_unbiased_mmd_by_hand():
    # Cubic kernel k(x, y) = (x·y / d + 1)³ with d = 1. x = {0, 1, 2}, y = {1, 2, 3}:
    # mean k over x pairs i≠j: (1 + 1 + 27)·2 / 6 = 58/6; over y pairs: (27 + 64 + 343)·2 / 6 = 868/6;
    # mean k(x, y) over all 9 pairs: (3 + 99 + 495) / 9 = 597/9; MMD² = 58/6 + 868/6 − 2·597/9 = 65/3.
    x = torch.tensor([[0.0], [1.0], [2.0]], dtype=torch.float64)
    y = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
    mean, std = kernel_distance(x, y, subset_size=3, subsets=4)
    assert mean == pytest.approx(65 / 3)
    assert std == pytest.approx(0.0, abs=1e-9)  # every subset is the whole set
    # The unbiased estimate for a set against itself is not 0: k(x, x) over all 9 pairs is (3 + 36 + 153) / 9, so
    # MMD² = 2·58/6 − 2·192/9 = −70/3.
    assert kernel_distance(x, x.clone(), subset_size=3, subsets=2)[0] == pytest.approx(-70 / 3)


def test_precision_recall_density_coverage_counted_by_hand():
    # Real {0, 1, 2, 3}: each point's nearest other real point is 1 away, so every real ball (k = 1) has radius 1.
    # Fake {0.5, 10, 10}: fake radii 9.5 (0.5 to 10), 0 and 0 (the two copies of 10).
    # precision: only 0.5 lies in a real ball → 1/3; recall: every real point is within 9.5 of 0.5 → 1;
    # density: 0.5 lies in the balls of 0 and 1 (not of 2: 1.5 away), the 10s in none → 2 / 3 / k = 2/3;
    # coverage: the nearest fake of 0 and 1 is inside their ball (0.5 < 1), of 2 and 3 not (1.5, 2.5) → 1/2.
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    fake = torch.tensor([[0.5], [10.0]])
    scores = precision_recall(real, torch.cat([fake, torch.tensor([[10.0]])]), nearest_k=1)
    assert scores == pytest.approx({"precision": 1 / 3, "recall": 1.0, "density": 2 / 3, "coverage": 0.5})
    scores = precision_recall(real, torch.tensor([[0.5], [10.0], [0.6]]), nearest_k=1)
    # Fake radii: 0.5 → 0.1 (to 0.6), 0.6 → 0.1, 10 → 9.4. Precision: 0.5 and 0.6 in real balls → 2/3; recall: every
    # real point is within 9.4 of 10? 0 is 10 away (no), 1 is 9 (yes), 2, 3 yes → 3/4; density: 0.5 in balls of 0
    # and 1, 0.6 in balls of 0 and 1 → 4/3; coverage: reals 0, 1 have a fake within 1 → 1/2.
    assert scores == pytest.approx({"precision": 2 / 3, "recall": 0.75, "density": 4 / 3, "coverage": 0.5})


def test_class_accuracy_and_classifier_score_by_hand():
    logits = torch.tensor([[9.0, 0, 0], [0, 9.0, 0], [0, 0, 9.0], [9.0, 0, 0]])
    assert class_accuracy(logits, torch.tensor([0, 1, 1, 0])) == 0.75
    # Confident and balanced over two classes: p(y) = (½, ½), KL(p(y|x) ‖ p(y)) = log 2 for each image → score 2.
    confident = torch.tensor([[60.0, 0.0], [0.0, 60.0]] * 4)
    assert classifier_score(confident, splits=1)[0] == pytest.approx(2.0, rel=1e-6)
    assert classifier_score(torch.zeros(8, 5), splits=2)[0] == pytest.approx(1.0)  # uninformative → 1


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="features per row"):
        frechet_distance(torch.randn(10, 3), torch.randn(10, 4))
    with pytest.raises(ValueError, match="NaN"):
        kernel_distance(torch.randn(10, 3), torch.full((10, 3), float("nan")))
    with pytest.raises(ValueError, match="at least 4 rows"):
        precision_recall(torch.randn(10, 3), torch.randn(2, 3), nearest_k=2)
    with pytest.raises(ValueError, match="`features` needs at least 7 rows"):  # was prdc's "kth(=6) out of bounds (6)"
        precision_recall(torch.randn(10, 3), torch.randn(6, 3), nearest_k=5)
    assert set(precision_recall(torch.randn(7, 3), torch.randn(7, 3), nearest_k=5)) == {"precision", "recall",
                                                                                       "density", "coverage"}
    with pytest.raises(ValueError, match="labels"):
        class_accuracy(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]))


def test_classifier_round_trips_and_checks_its_input(tmp_path):
    torch.manual_seed(0)
    classifier = ImageClassifier(in_channels=1, num_classes=3, class_names=["a", "b", "c"], block_out_channels=(4, 8),
                                 layers_per_block=1, dataset="toy").eval()  # fmt: skip
    images = torch.rand(5, 1, 32, 32) * 2 - 1
    output = classifier(images)
    assert output.logits.shape == (5, 3) and output.features.shape == (5, 8) and classifier.num_features == 8
    classifier.save_pretrained(tmp_path / "classifier")
    reloaded = ImageClassifier.from_pretrained(tmp_path / "classifier").eval()
    assert reloaded.config.class_names == ["a", "b", "c"] and reloaded.config.dataset == "toy"
    torch.testing.assert_close(reloaded(images).features, output.features, rtol=0, atol=0)
    _, logits = extract_features(reloaded, images, batch_size=2)
    torch.testing.assert_close(logits, output.logits)
    with pytest.raises(ValueError, match=r"\(B, 1, 32, 32\)"):
        classifier(torch.rand(2, 3, 32, 32))
    with pytest.raises(TypeError, match="floating point"):
        classifier(torch.zeros(2, 1, 32, 32, dtype=torch.uint8))


def test_reference_statistics_round_trip(tmp_path):
    features = torch.randn(50, 4)
    reference = ReferenceStatistics.from_features(features, torch.arange(50) % 3, max_features=20, seed=1,
                                                  dataset="toy", split="test")  # fmt: skip
    assert reference.mean.dtype == torch.float64 and reference.features.shape == (20, 4)
    reference.save(tmp_path / "stats.safetensors")
    loaded = ReferenceStatistics.load(tmp_path / "stats.safetensors")
    assert loaded.num_images == 50 and loaded.info == {"dataset": "toy", "split": "test"}
    torch.testing.assert_close(loaded.covariance, torch.cov(features.double().T))
    torch.testing.assert_close(loaded.labels, reference.labels)
    assert math.isclose(frechet_distance(loaded, features), 0.0, abs_tol=1e-8)
