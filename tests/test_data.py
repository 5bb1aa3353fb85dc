import torch
from PIL import Image

from vq_hub.data import image_grid, image_to_tensor, load_parquet_images, shipped_fashion_mnist, tensor_to_images


def test_shipped_subset_has_100_images_per_class():
    dataset = load_parquet_images(shipped_fashion_mnist())
    assert len(dataset) == 1000
    assert sorted(dataset["label"]) == [label for label in range(10) for _ in range(100)]
    assert (shipped_fashion_mnist().parent / "LICENSE").read_text().startswith("The MIT License")


def test_small_images_are_padded_without_changing_pixels():
    image = Image.fromarray((torch.arange(28 * 28) % 256).to(torch.uint8).reshape(28, 28).numpy(), mode="L")
    tensor = image_to_tensor(image, resolution=32, channels=1)
    assert tensor.shape == (1, 32, 32)
    assert torch.all(tensor[:, :2] == -1) and torch.all(tensor[:, :, -2:] == -1)
    assert tensor_to_images(tensor[None, :, 2:30, 2:30])[0].tobytes() == image.tobytes()


def test_large_images_are_resized_and_centre_cropped():
    tensor = image_to_tensor(Image.new("RGB", (64, 48), (255, 0, 0)), resolution=32, channels=3)
    assert tensor.shape == (3, 32, 32)
    assert torch.allclose(tensor[0], torch.ones(32, 32)) and torch.allclose(tensor[1], -torch.ones(32, 32))


def test_grid_layout():
    rows = [torch.zeros(3, 1, 8, 8), torch.ones(2, 1, 8, 8)]
    grid = image_grid(rows, padding=2)
    assert grid.size == (3 * 10 + 2, 2 * 10 + 2) and grid.mode == "L"
    assert grid.getpixel((2, 12)) == 255 and grid.getpixel((2, 2)) == 128


def test_load_image_dataset_from_imagefolder_and_parquet(tmp_path):
    import pytest

    from vq_hub.data import image_transform, load_image_dataset

    for index in range(3):
        Image.new("RGB", (20, 12), (index * 50, 0, 0)).save(tmp_path / f"{index}.png")
    dataset = load_image_dataset(data_dir=str(tmp_path))
    dataset.set_transform(image_transform(resolution=8, channels=3))
    assert len(dataset) == 3 and dataset[0]["pixel_values"].shape == (3, 8, 8)

    assert len(load_image_dataset(parquet_files=str(shipped_fashion_mnist()))) == 1000
    with pytest.raises(ValueError, match="exactly one"):
        load_image_dataset(data_dir=str(tmp_path), parquet_files=str(shipped_fashion_mnist()))
    with pytest.raises(ValueError, match="exactly one"):
        load_image_dataset()
    with pytest.raises(FileNotFoundError, match="parquet_files"):
        load_image_dataset(parquet_files=str(tmp_path / "missing.parquet"))
    dataset.set_transform(image_transform(resolution=8, channels=3, image_column="picture"))
    with pytest.raises(ValueError, match="image_column"):
        dataset[0]
