"""FID, KID, precision/recall/density/coverage, class accuracy and an Inception-Score analogue, computed from the
features and logits of a feature network. The statistics are torchmetrics' and prdc's; this module adapts inputs.

Each function takes features (N, d) rather than images: one pass of the classifier yields features and logits
together, and the shipped reference is statistics, not images. torchmetrics' metrics are given a pass-through
`feature=` module for that reason; the standard-Inception FID (`inception_fid`) takes images instead.
"""

import contextlib
import io
import warnings

import torch
from torch import nn

from .reference import ReferenceStatistics
from ..utils.random import seeded_global_rng


class FeaturesAsInput(nn.Module):
    """The `feature=` module of torchmetrics' FID/KID when features are computed beforehand: returns its input in
    float64 (torchmetrics casts the result of `compute` back to this dtype)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.double()


def _check_features(name: str, features: torch.Tensor, num_features: int | None = None, minimum: int = 2):
    if not isinstance(features, torch.Tensor) or features.ndim != 2:
        raise ValueError(f"`{name}` must be a tensor of features (N, d), got "
                         f"{tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__}")  # fmt: skip
    if len(features) < minimum:
        raise ValueError(f"`{name}` needs at least {minimum} rows, got {len(features)}")
    if num_features is not None and features.shape[1] != num_features:
        raise ValueError(f"`{name}` has {features.shape[1]} features per row, the reference {num_features}: "
                         "were they made by the same feature network?")  # fmt: skip
    if not torch.isfinite(features).all():
        raise ValueError(f"`{name}` holds NaN or infinite values")


def frechet_distance(reference: ReferenceStatistics | torch.Tensor, features: torch.Tensor) -> float:
    """FID between a reference (its statistics, or its features (N, d)) and `features` (M, d), in float64 with
    torchmetrics' `FrechetInceptionDistance` (any feature network, not only Inception)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if isinstance(reference, torch.Tensor):
        _check_features("reference", reference)
        num_features = reference.shape[1]
    else:
        num_features = reference.num_features
    _check_features("features", features, num_features)
    metric = FrechetInceptionDistance(feature=FeaturesAsInput(num_features), reset_real_features=False)
    if isinstance(reference, torch.Tensor):
        metric.update(reference, real=True)
    else:  # torchmetrics' running sums, rebuilt from the mean and covariance
        n, mean = reference.num_images, reference.mean.double()
        metric.real_features_sum = mean * n
        metric.real_features_cov_sum = reference.covariance.double() * (n - 1) + n * torch.outer(mean, mean)
        metric.real_features_num_samples = torch.tensor(n, dtype=torch.long)
    metric.update(features, real=False)
    return float(metric.compute())


def kernel_distance(reference: torch.Tensor, features: torch.Tensor, subset_size: int = 1000, subsets: int = 100,
                    seed: int = 0) -> tuple[float, float]:  # fmt: skip
    """KID (unbiased MMD² with the cubic polynomial kernel) between two feature sets: mean and std over `subsets`
    random subsets of `min(subset_size, N, M)` rows each, drawn with `seed`, with torchmetrics'
    `KernelInceptionDistance`."""
    from torchmetrics.image.kid import KernelInceptionDistance

    _check_features("reference", reference)
    _check_features("features", features, reference.shape[1])
    size = min(subset_size, len(reference), len(features))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(feature=FeaturesAsInput(reference.shape[1]), subsets=subsets,
                                         subset_size=size)  # fmt: skip
    metric.update(reference, real=True)
    metric.update(features, real=False)
    with seeded_global_rng(seed):  # torchmetrics draws the subsets from the global CPU generator
        mean, std = metric.compute()
    return float(mean), float(std)


def precision_recall(reference: torch.Tensor, features: torch.Tensor, nearest_k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage of `features` against `reference` on k-nearest-neighbour manifolds
    (Kynkäänniemi et al. 2019; Naeem et al. 2020), with the `prdc` package, in float64."""
    from prdc import compute_prdc

    _check_features("reference", reference, minimum=nearest_k + 2)  # prdc partitions at k + 1: N ≥ k + 2
    _check_features("features", features, reference.shape[1], minimum=nearest_k + 2)
    if not isinstance(nearest_k, int) or nearest_k < 1:
        raise ValueError(f"`nearest_k` must be a positive integer, got {nearest_k!r}")
    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the set sizes
        scores = compute_prdc(reference.double().numpy(), features.double().numpy(), nearest_k)
    return {name: float(value) for name, value in scores.items()}


def class_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of images whose most likely class under the classifier is the class they were generated for."""
    labels = torch.as_tensor(labels)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"`logits` (N, classes) and `labels` (N,) do not match: {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")  # fmt: skip
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(f"`labels` must lie in [0, {logits.shape[1] - 1}]")
    return float((logits.argmax(1) == labels.to(logits.device)).double().mean())


def classifier_score(logits: torch.Tensor, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """The Inception Score computed with our classifier's logits: exp(E[KL(p(y|x) ‖ p(y))]), between 1 and the number
    of classes (high when each image is clearly one class and the classes are balanced); mean and std over `splits`
    groups, with torchmetrics' `InceptionScore`."""
    from torchmetrics.image.inception import InceptionScore

    if logits.ndim != 2 or len(logits) < splits:
        raise ValueError(f"`logits` must be (N, classes) with N ≥ splits ({splits}), got {tuple(logits.shape)}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        warnings.filterwarnings("ignore", message=".*degrees of freedom.*")
        metric = InceptionScore(feature=nn.Identity(), splits=splits)
        metric.update(logits.double())
        with seeded_global_rng(seed):  # torchmetrics draws the splits' permutation from the global CPU generator
            mean, std = metric.compute()
    return float(mean), float(std) if splits > 1 else 0.0
