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
