"""Images in, tensors out: dataset loading, pixel transforms and picture grids (no torchvision needed)."""

from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def shipped_fashion_mnist() -> Path:
    """Path of the 1,000-image Fashion-MNIST subset (MIT) that ships with the package."""
    return Path(str(resources.files("vq_hub") / "assets" / "fashion_mnist_mini" / "train.parquet"))


def load_image_dataset(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    data_dir: str | None = None,
    parquet_files: list[str] | str | None = None,
    split: str = "train",
    cache_dir: str | None = None,
):
    """A `datasets.Dataset` from exactly one source: a Hub dataset (`dataset_name`), an imagefolder (`data_dir`) or
    Parquet files with an image column (`parquet_files`)."""
    from datasets import load_dataset

    sources = [name for name, value in [("dataset_name", dataset_name), ("data_dir", data_dir),
                                        ("parquet_files", parquet_files)] if value]  # fmt: skip
    if len(sources) != 1:
        raise ValueError(f"give exactly one of `dataset_name`, `data_dir`, `parquet_files`; got {sources or 'none'}")
    if dataset_name:
        return load_dataset(dataset_name, dataset_config_name, split=split, cache_dir=cache_dir)
    if data_dir:
        if not Path(data_dir).is_dir():
            raise FileNotFoundError(f"`data_dir` {data_dir!r} is not a folder")
        return load_dataset("imagefolder", data_dir=data_dir, split="train", cache_dir=cache_dir)
    files = [parquet_files] if isinstance(parquet_files, str) else list(parquet_files)
    missing = [file for file in files if not Path(file).is_file()]
    if missing:
        raise FileNotFoundError(f"`parquet_files` not found: {missing}")
    return load_dataset("parquet", data_files={"train": files}, split="train", cache_dir=cache_dir)


def image_transform(resolution: int, channels: int, image_column: str = "image"):
    """A `Dataset.set_transform` function adding `pixel_values` (C, resolution, resolution) in [-1, 1]."""

    def transform(batch: dict) -> dict:
        if image_column not in batch:
            raise ValueError(f"the dataset has no column {image_column!r} (`image_column`); columns: {list(batch)}")
        batch["pixel_values"] = [image_to_tensor(image, resolution, channels) for image in batch[image_column]]
        return batch

    return transform


def load_parquet_images(path: str | Path, split: str = "train"):
    """A `datasets.Dataset` from a Parquet file with an `image` column (and usually `label`)."""
    from datasets import load_dataset

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`path` {str(path)!r} is not a Parquet file")
    return load_dataset("parquet", data_files={split: str(path)}, split=split)


def image_to_tensor(image: Image.Image, resolution: int, channels: int = 3) -> torch.Tensor:
    """A PIL image → `(channels, resolution, resolution)` float tensor in [-1, 1].

    Images smaller than `resolution` are padded with black around the centre (so 28×28 Fashion-MNIST keeps every
    pixel at 32×32); larger ones are resized on the shorter side and centre-cropped.
    """
    if channels not in (1, 3):
        raise ValueError(f"`channels` must be 1 (grayscale) or 3 (RGB), got {channels}")
    image = image.convert("L" if channels == 1 else "RGB")
    width, height = image.size
    if width <= resolution and height <= resolution:
        canvas = Image.new(image.mode, (resolution, resolution))
        canvas.paste(image, ((resolution - width) // 2, (resolution - height) // 2))
        image = canvas
    else:
        scale = resolution / min(width, height)
        image = image.resize((max(resolution, round(width * scale)), max(resolution, round(height * scale))),
                             Image.Resampling.BICUBIC)  # fmt: skip
        left, top = (image.size[0] - resolution) // 2, (image.size[1] - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.float32).reshape(resolution, resolution, channels)
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1


def tensor_to_images(images: torch.Tensor) -> list[Image.Image]:
    """A `(B, C, H, W)` tensor in [-1, 1] → B PIL images (grayscale for one channel)."""
    array = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    array = array.permute(0, 2, 3, 1).cpu().numpy()
    if array.shape[-1] == 1:
        return [Image.fromarray(a[..., 0], mode="L") for a in array]
    return [Image.fromarray(a, mode="RGB") for a in array]


def image_grid(rows: list[torch.Tensor], padding: int = 2) -> Image.Image:
    """Tile batches `(B, C, H, W)` in [-1, 1] into one picture, one batch per row (e.g. originals above
    reconstructions)."""
    columns = max(len(row) for row in rows)
    height, width = rows[0].shape[-2:]
    mode = "L" if rows[0].shape[1] == 1 else "RGB"
    grid = Image.new(mode, (columns * (width + padding) + padding, len(rows) * (height + padding) + padding))
    for r, row in enumerate(rows):
        for c, image in enumerate(tensor_to_images(row)):
            grid.paste(image, (padding + c * (width + padding), padding + r * (height + padding)))
    return grid
