"""Finding and loading a feature network: a saved `ImageClassifier` with the reference statistics of its test split.

The project ships one per dataset under `checkpoints/` (Fashion-MNIST: 1 channel; CIFAR-10: 3 channels; 32×32); a
model is matched with the one trained on images of its shape."""

from dataclasses import dataclass
from pathlib import Path

from .classifier import ImageClassifier
from .reference import REFERENCE_STATISTICS, ReferenceStatistics

SHIPPED_FEATURE_NETWORKS = {(1, 32): "fashion-mnist-classifier", (3, 32): "cifar10-classifier"}


@dataclass
class FeatureNetwork:
    """A classifier in eval mode, its reference statistics (None when the folder has none) and the name reports give
    it (the folder's)."""

    classifier: ImageClassifier
    reference: ReferenceStatistics | None
    name: str

    def describe(self) -> dict:
        """What a report says about the network its figures come from."""
        config = self.classifier.config
        return {"name": self.name, "kind": "vq_hub ImageClassifier (not Inception v3)", "dataset": config.dataset,
                "num_features": self.classifier.num_features, "num_classes": config.num_classes,
                "image_shape": [config.in_channels, config.sample_size, config.sample_size]}  # fmt: skip


def checkpoint_folders() -> list[Path]:
    """Where shipped checkpoints are looked for: `./checkpoints`, then the repository's (beside `src/`)."""
    repository = Path(__file__).resolve().parents[3] / "checkpoints"
    folders = [Path.cwd() / "checkpoints", repository]
    return [folder for index, folder in enumerate(folders) if folder.is_dir() and folder not in folders[:index]]


def _shape(sample_size) -> tuple[int, int]:
    """`(H, W)` of a config's `sample_size`: an int (square), or a pair saved as a list (`--resolution H W`)."""
    from ..data import image_size

    return image_size(tuple(sample_size) if isinstance(sample_size, list) else sample_size)


def find_feature_network(in_channels: int, sample_size: int | tuple[int, int] | list[int]) -> Path:
    """The shipped classifier for images of `in_channels` × `sample_size` (an int or `(H, W)`); a FileNotFoundError
    saying what to pass when there is none."""
    height, width = _shape(sample_size)
    name = SHIPPED_FEATURE_NETWORKS.get((in_channels, height)) if height == width else None
    if name is None:
        raise FileNotFoundError(
            f"no shipped feature network for {in_channels}-channel {height}×{width} images (shipped: "
            f"{', '.join(f'{c}×{s}² → {n}' for (c, s), n in SHIPPED_FEATURE_NETWORKS.items())}); pass one with "
            "`feature_network` / --feature-network (train it with examples/train_classifier.py)"
        )
    for folder in checkpoint_folders():
        if (folder / name / "config.json").is_file():
            return folder / name
    raise FileNotFoundError(
        f"the feature network {name!r} for {in_channels}-channel {height}×{width} images is not in "
        f"./checkpoints or the repository's checkpoints/: pass its folder with `feature_network` / --feature-network"
    )


def load_feature_network(path: str | Path, device=None) -> FeatureNetwork:
    """A saved classifier folder (offline: a local folder only) with its `reference_statistics.safetensors`."""
    path = Path(path).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"`feature_network` {str(path)!r} is not a saved ImageClassifier folder (config.json)")
    classifier = ImageClassifier.from_pretrained(path).eval().requires_grad_(False)
    if device is not None:
        classifier.to(device)
    statistics = path / REFERENCE_STATISTICS
    reference = ReferenceStatistics.load(statistics) if statistics.is_file() else None
    if reference is not None and reference.num_features != classifier.num_features:
        raise ValueError(f"{statistics}: {reference.num_features} features, but the classifier has "
                         f"{classifier.num_features}: the statistics belong to another network")  # fmt: skip
    return FeatureNetwork(classifier, reference, path.name)


def resolve_feature_network(feature_network, in_channels: int, sample_size, device=None) -> FeatureNetwork:
    """A `FeatureNetwork` as is, a folder loaded, or (None) the shipped one for images of this shape; checked against
    the images it will score."""
    if feature_network is None:
        feature_network = find_feature_network(in_channels, sample_size)
    if not isinstance(feature_network, FeatureNetwork):
        feature_network = load_feature_network(feature_network, device)
    config = feature_network.classifier.config
    takes, makes = _shape(config.sample_size), _shape(sample_size)
    if (config.in_channels, takes) != (in_channels, makes):
        raise ValueError(
            f"the feature network {feature_network.name!r} takes {config.in_channels}-channel "
            f"{takes[0]}×{takes[1]} images, the model makes {in_channels}-channel {makes[0]}×{makes[1]} ones"
        )
    return feature_network
