"""Features of an image set under a feature network, and the reference statistics shipped beside each classifier so
that `vq-hub evaluate` needs neither the test images nor a network connection."""

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..utils.io import atomic_file

REFERENCE_STATISTICS = "reference_statistics.safetensors"


@torch.no_grad()
def extract_features(classifier, images: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """`(features, logits)` of `images` (N, C, H, W) in [-1, 1] under `classifier` (an `ImageClassifier`), in float32
    on the CPU, computed `batch_size` images at a time in eval mode."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}")
    was_training = classifier.training
    classifier.eval()
    features, logits = [], []
    try:
        for start in range(0, len(images), batch_size):
            output = classifier(images[start : start + batch_size].to(classifier.device))
            features.append(output.features.float().cpu())
            logits.append(output.logits.float().cpu())
    finally:
        classifier.train(was_training)
    if not features:
        raise ValueError("`images` is empty")
    return torch.cat(features), torch.cat(logits)


@dataclass
class ReferenceStatistics:
    """
    What the metrics need of a real image set: the mean and covariance of its features in float64 (FID), and a seeded
    subset of the features themselves (KID, precision/recall) with their labels.

    Args:
        mean (`torch.Tensor`, float64, `(d,)`), covariance (`torch.Tensor`, float64, `(d, d)`): over all `num_images`.
        num_images (`int`): Images the mean and covariance were computed from.
        features (`torch.Tensor`, float32, `(m, d)`): At most `max_features` of them, drawn with a fixed seed.
        labels (`torch.Tensor`, int64, `(m,)`, *optional*): The labels of `features`.
        info (`dict`): Where they come from: dataset, split, feature network.
    """

    mean: torch.Tensor
    covariance: torch.Tensor
    num_images: int
    features: torch.Tensor
    labels: torch.Tensor | None = None
    info: dict = field(default_factory=dict)

    @classmethod
    def from_features(cls, features: torch.Tensor, labels: torch.Tensor | None = None, max_features: int = 2000,
                      seed: int = 0, **info) -> "ReferenceStatistics":  # fmt: skip
        """Statistics of all `features` (N, d), keeping a subset of `max_features` rows drawn with `seed`."""
        if features.ndim != 2 or len(features) < 2:
            raise ValueError(f"`features` must be (N, d) with N ≥ 2, got {tuple(features.shape)}")
        features64 = features.double()
        mean = features64.mean(0)
        centred = features64 - mean
        covariance = centred.T @ centred / (len(features) - 1)
        keep = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))[:max_features]
        keep = keep.sort().values
        return cls(mean, covariance, len(features), features[keep].float(),
                   labels[keep].long() if labels is not None else None, dict(info))  # fmt: skip

    @property
    def num_features(self) -> int:
        return self.mean.shape[0]

    def save(self, path: str | Path) -> Path:
        """One safetensors file (written atomically); `info` goes into its metadata as JSON."""
        from safetensors.torch import save_file

        tensors = {"mean": self.mean, "covariance": self.covariance, "features": self.features.contiguous()}
        if self.labels is not None:
            tensors["labels"] = self.labels
        metadata = {"num_images": str(self.num_images), "info": json.dumps(self.info)}
        with atomic_file(path) as temporary:
            save_file(tensors, str(temporary), metadata=metadata)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "ReferenceStatistics":
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no reference statistics at {str(path)!r} (write them with "
                                    "examples/train_classifier.py or `ReferenceStatistics.save`)")  # fmt: skip
        with safe_open(str(path), framework="pt") as file:
            tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118 (safe_open is not a dict)
            metadata = file.metadata() or {}
        missing = {"mean", "covariance", "features"} - set(tensors)
        if missing or "num_images" not in metadata:
            raise ValueError(
                f"{str(path)!r} is not a reference-statistics file: missing {sorted(missing) or 'num_images'}"
            )
        return cls(tensors["mean"].double(), tensors["covariance"].double(), int(metadata["num_images"]),
                   tensors["features"].float(), tensors.get("labels"), json.loads(metadata.get("info", "{}")))  # fmt: skip
