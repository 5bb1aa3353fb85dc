"""Pictures of the codebook: tiles decoded from each code, usage counts and their histogram, the patches behind the
most used codes, code maps, and `vq-hub codebook`."""

import numpy as np
import pytest
import torch
from conftest import ROOT, tiny_vq_config
from PIL import Image

from vq_hub import VQVAEModel
from vq_hub.cli import main
from vq_hub.data import shipped_fashion_mnist, tensor_to_images
from vq_hub.visualization import (
    CodebookUsage,
    code_map,
    code_tiles,
    codebook_figure,
    measure_usage,
    save_figure,
    tile_mosaic,
    top_code_patches,
    usage_histogram,
)
from vq_hub.visualization.codebook import DEAD_COLOUR, blank_image_code

TOKENIZER = str(ROOT / "checkpoints" / "fashion-mnist-vqvae")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VQVAEModel(**tiny_vq_config(num_vq_embeddings=16)).eval()  # 16×16 images → 8×8 codes of 2 pixels


def images(count: int = 6) -> torch.Tensor:
    return torch.rand(count, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_usage_counts_every_cell_and_orders_codes_by_use(model):
    usage = measure_usage(model, images(), batch_size=4)  # two batches
    assert usage.codes.shape == (6, 8, 8) and usage.counts.sum() == 6 * 64
    assert torch.equal(usage.codes, model.tokenize(images()))
    assert torch.equal(usage.counts, torch.bincount(usage.codes.flatten(), minlength=16).float())
    counts = usage.counts[usage.order]
    assert torch.all(counts[:-1] >= counts[1:])  # most used first
    assert set(usage.dead_codes.tolist()) == set(torch.nonzero(usage.counts == 0).flatten().tolist())
    assert usage.usage == pytest.approx(float((usage.counts > 0).float().mean()))


def test_usage_order_perplexity_and_dead_codes_on_known_counts():
    usage = CodebookUsage(codes=torch.tensor([[[2, 2], [2, 0]]]), counts=torch.tensor([1.0, 0.0, 3.0, 0.0]))
    assert usage.order.tolist() == [2, 0, 1, 3] and usage.dead_codes.tolist() == [1, 3] and usage.usage == 0.5
    assert usage.perplexity == pytest.approx(np.exp(-(0.25 * np.log(0.25) + 0.75 * np.log(0.75))))


def test_uniform_tile_is_the_centre_of_a_grid_filled_with_the_code(model):
    tiles = code_tiles(model, [3, 7], context="uniform")
    assert tiles.shape == (2, 3, 4, 4)  # the central 2×2 cells of a 4×4 grid, 2 pixels a cell
    with torch.no_grad():
        decoded = model.detokenize(torch.full((1, 4, 4), 7)).clamp(-1, 1)
    assert torch.allclose(tiles[1], decoded[0, :, 2:6, 2:6], atol=1e-6)


def test_neutral_tile_is_the_code_alone_amid_the_neutral_code(model):
    neutral = blank_image_code(model)
    tiles = code_tiles(model, [5], context="neutral", neutral_code=neutral)
    grid = torch.full((1, 5, 5), neutral)
    grid[0, 2, 2] = 5
    with torch.no_grad():
        decoded = model.detokenize(grid).clamp(-1, 1)
    assert tiles.shape == (1, 3, 6, 6) and torch.allclose(tiles[0], decoded[0, :, 2:8, 2:8], atol=1e-6)
    assert code_tiles(model).shape == (16, 3, 6, 6)  # every code by default, neutral context
    with pytest.raises(ValueError, match=r"`codes` must lie in \[0, 15\]"):
        code_tiles(model, [16])
    with pytest.raises(ValueError, match="`context` must be one of"):
        code_tiles(model, context="blank")


def test_neutral_code_of_a_tokenizer_for_wide_images():
    """A tokenizer of 16×32 images (sample_size [h, w], as for the captioned scenes) has a blank-image code too."""
    torch.manual_seed(0)
    wide = VQVAEModel(**tiny_vq_config(num_vq_embeddings=16, sample_size=[16, 32])).eval()
    with torch.no_grad():
        expected = int(torch.bincount(wide.tokenize(-torch.ones(1, 3, 16, 32)).flatten()).argmax())
    assert blank_image_code(wide) == expected


def test_mosaic_lays_tiles_out_in_order_and_marks_dead_codes():
    tiles = torch.stack([torch.full((1, 2, 2), value) for value in (-1.0, 0.0, 1.0)])
    mosaic = tile_mosaic(tiles, order=torch.tensor([2, 0, 1]), dead=torch.tensor([1]), columns=3, scale=4)
    assert mosaic.size == (3 * 10, 10)  # 8-pixel tiles with a 1-pixel border
    array = np.asarray(mosaic)
    assert tuple(array[4, 4]) == (255, 255, 255) and tuple(array[4, 14]) == (0, 0, 0)  # code 2 (white), code 0
    assert tuple(array[1, 21]) == DEAD_COLOUR and tuple(array[1, 1]) != DEAD_COLOUR  # code 1 framed in red


def test_top_code_patches_are_the_cells_of_those_codes(model):
    data = images()
    usage = measure_usage(model, data)
    picture, top = top_code_patches(data, usage, factor=2, num_codes=3, num_patches=4, margin=0, scale=1)
    assert top == usage.order[:3].tolist() and picture.size == (4 * 4, 3 * 4)  # 2-pixel cells + 2-pixel spacing
    bigger, _ = top_code_patches(data, usage, factor=2, num_codes=1, num_patches=1, margin=1, scale=4)
    inner = np.asarray(bigger)[1 + 8 + 1 : 1 + 16 - 1, 1 + 8 + 1 : 1 + 16 - 1]  # inside the red outline
    n, i, j = torch.nonzero(usage.codes == top[0])[0].tolist()  # the first occurrence is the first patch
    expected = np.asarray(tensor_to_images(data[n : n + 1, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2])[0])
    assert np.array_equal(inner, expected.repeat(4, 0).repeat(4, 1)[1:-1, 1:-1])
    with pytest.raises(ValueError, match="must describe the same images"):
        top_code_patches(data[:2], usage, factor=2)


def test_histogram_and_page_report_the_measured_numbers(model, tmp_path):
    usage = measure_usage(model, images())
    figure = usage_histogram(usage)
    ax = figure.axes[0]
    assert len(ax.patches) >= 16 and f"perplexity {usage.perplexity:.1f} / 16" in ax.get_title()
    heights = [bar.get_height() for bar in ax.patches[:16]]
    assert heights == pytest.approx((usage.counts[usage.order] / usage.counts.sum() * 100).tolist())
    save_figure(figure, tmp_path / "histogram.png")
    page = codebook_figure(model, images(), num_top_codes=4, num_patches=3)
    assert len(page.axes) == 3 and "most used first" in page.axes[0].get_title()
    save_figure(page, tmp_path / "page.png")
    alone = codebook_figure(model)
    assert len(alone.axes) == 1 and "in code order (no images: no usage)" in alone.axes[0].get_title()
    save_figure(alone, tmp_path / "alone.png")
    for name in ("histogram", "page", "alone"):
        with Image.open(tmp_path / f"{name}.png") as picture:
            assert picture.width > 300
    assert sorted(path.name for path in tmp_path.iterdir()) == ["alone.png", "histogram.png", "page.png"]


def test_code_map_colours_each_id_and_writes_it():
    codes = torch.tensor([[0, 1], [1, 255]])
    picture = code_map(codes, 256, cell=32)
    array = np.asarray(picture)
    assert picture.size == (64, 64)
    assert tuple(array[2, 34]) == tuple(array[34, 2]) != tuple(array[2, 2])  # same id, same colour; different ids
    plain = np.asarray(code_map(codes, 256, cell=32, show_ids=False))
    assert not np.array_equal(array, plain)  # the ids are written
    with pytest.raises(ValueError, match=r"one grid \(h, w\)"):
        code_map(codes[None], 256)


def test_cli_codebook_with_and_without_images(capsys, tmp_path):
    out = tmp_path / "codebook.png"
    code = main(["codebook", "--model", TOKENIZER, "--images", str(shipped_fashion_mnist()), "--num-images", "100",
                 "--out", str(out)])  # fmt: skip
    message = capsys.readouterr().out
    assert code == 0 and message.startswith(f"wrote {out}: 100 images, perplexity ")
    assert "/ 256, usage " in message and " dead codes" in message
    with Image.open(out) as picture:
        assert picture.size == (1400, 740)
    code = main(["codebook", "--model", TOKENIZER, "--out", str(tmp_path / "tiles.png"), "--context", "uniform"])
    assert code == 0 and "256 code tiles in code order" in capsys.readouterr().out
    assert main(["codebook", "--model", TOKENIZER, "--out", str(tmp_path / "codebook.jpg")]) == 1
    assert "give a .png file name" in capsys.readouterr().err


def test_a_two_level_tokenizer_gets_a_picture_per_level(capsys, tmp_path):
    """`vq-hub codebook --model checkpoints/fashion-mnist-vqvae2` failed (codes of a HierarchicalVQModel must be a
    pair; no attribute 'codebook_size'): each level's codebook is drawn, the other level held at a black image's."""
    from test_hierarchical_vq_model import tiny_hierarchical_config

    from vq_hub import HierarchicalVQModel
    from vq_hub.code_levels import LevelView, level_views

    torch.manual_seed(0)
    tokenizer = HierarchicalVQModel(**tiny_hierarchical_config()).eval()
    views = level_views(tokenizer)
    assert list(views) == ["top", "bottom"]
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    top, bottom = tokenizer.tokenize(images)
    assert torch.equal(views["top"].tokenize(images), top) and torch.equal(views["bottom"].tokenize(images), bottom)
    for level, grid in (("top", top), ("bottom", bottom)):
        view = views[level]
        assert view.codebook_size == tokenizer.quantizers[level].codebook_size
        tiles = code_tiles(view, torch.arange(4), context="neutral")
        assert tiles.shape == (4, 3, 3 * view.downsample_factor, 3 * view.downsample_factor)
        assert measure_usage(view, images).counts.sum() == grid.numel()
    top_code, bottom_code = views["bottom"]._blank_codes()
    with torch.no_grad():  # a level's grid decodes with the other level at the black image's code
        assert torch.equal(views["bottom"].detokenize(bottom), tokenizer.detokenize((torch.full_like(top, top_code),
                                                                                     bottom)))  # fmt: skip
        assert torch.equal(views["top"].detokenize(top), tokenizer.detokenize((top, torch.full_like(bottom,
                                                                                                    bottom_code))))
        odd = views["bottom"].detokenize(bottom[:, :5, :3])  # padded to whole top cells, then cropped
        assert odd.shape == (3, 3, 5 * views["bottom"].downsample_factor, 3 * views["bottom"].downsample_factor)
    with pytest.raises(ValueError, match="level"):
        LevelView(tokenizer, "middle")

    out = tmp_path / "codebook.png"
    folder = ROOT / "checkpoints" / "fashion-mnist-vqvae2"
    assert main(["codebook", "--model", str(folder), "--images", str(shipped_fashion_mnist()), "--num-images", "20",
                 "--max-tiles", "16", "--out", str(out)]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [f"wrote {tmp_path / 'codebook-top.png'} (top level)",
                                                      f"wrote {tmp_path / 'codebook-bottom.png'} (bottom level)"]
    for level in ("top", "bottom"):
        with Image.open(tmp_path / f"codebook-{level}.png") as picture:
            assert picture.width > 500
