"""matplotlib figures of a codebook: the usage histogram and the one-page summary that `vq-hub codebook` and the
tokenizer training script write."""

import os
from pathlib import Path

import torch

from ..utils.io import atomic_file
from .codebook import (
    CodebookUsage, binary_quantizer, bit_flip_codes, bit_planes, blank_image_code, code_tiles, measure_usage,
    tile_mosaic, top_code_patches,
)  # fmt: skip


def _pyplot():
    """pyplot on the Agg backend (no display needed), imported only when a figure is drawn."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def usage_histogram(usage: CodebookUsage, ax=None):
    """Sorted code frequencies as bars (% of all cells), the uniform level dashed, dead codes marked in red, and the
    perplexity and usage in the title. Draws into `ax` when given; returns the figure."""
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.2), layout="constrained")
    counts = usage.counts
    size = len(counts)
    frequencies = (counts[usage.order] / counts.sum().clamp_min(1) * 100).numpy()
    ax.bar(range(size), frequencies, width=1.0, color="#3b75af", linewidth=0)
    ax.axhline(100 / size, color="grey", linestyle="--", linewidth=1, label=f"uniform ({100 / size:.2g}%)")
    dead = len(usage.dead_codes)
    if dead:
        ax.axvspan(size - dead - 0.5, size - 0.5, color="#dc2828", alpha=0.25, label=f"{dead} dead codes")
        ax.plot(range(size - dead, size), [0] * dead, "|", color="#dc2828", markersize=8)
    ax.set_xlim(-0.5, size - 0.5)
    ax.set_xlabel("codes, most used first")
    ax.set_ylabel("% of code cells")
    ax.set_title(f"{int(counts.sum()):,} cells of {len(usage.codes):,} images: perplexity {usage.perplexity:.1f} / "
                 f"{size}, usage {usage.usage:.0%}, {dead} dead", fontsize=10)  # fmt: skip
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    return ax.figure


def codebook_figure(model, images: torch.Tensor | None = None, usage: CodebookUsage | None = None,
                    context: str = "neutral", max_tiles: int = 1024, num_top_codes: int = 8,
                    num_patches: int = 8):  # fmt: skip
    """One page about `model`'s codebook (a `VQVAEModel`).

    With `images` `(N, C, H, W)` in [-1, 1]: the code tiles ordered by usage (dead codes framed in red), the usage
    histogram, and for the most used codes the patches that map to them. Without images there is no usage: only the
    tiles, in code order. `usage` is `measure_usage(model, images)` when already computed. At most `max_tiles` tiles
    are drawn (the most used ones), for very large codebooks.

    A binary quantizer (LFQ, BSQ) gets one more panel, about its bits: with images, the bit planes of a few of them;
    without, the tiles of the black image's code with each bit flipped.
    """
    if usage is not None and images is None:
        raise ValueError("`usage` needs the `images` it was measured on (for the patches)")
    plt = _pyplot()
    images = images.detach().float().cpu() if images is not None else None
    was_training = model.training
    model.eval()
    try:
        if images is not None and usage is None:
            usage = measure_usage(model, images)
        order = usage.order if usage is not None else torch.arange(model.codebook_size)
        shown = order[:max_tiles]
        tiles = code_tiles(model, shown, context=context)
        dead = usage.dead_codes if usage is not None else None
        mosaic = tile_mosaic(tiles, order=torch.arange(len(shown)), dead=_positions(shown, dead))
        patches = bits = None
        if usage is not None:
            patches, top = top_code_patches(images, usage, model.downsample_factor, num_top_codes, num_patches)
        binary = binary_quantizer(model)
        if binary is not None and images is not None:
            bits = bit_planes(model, images)
            bits_title = (f"bit planes: each image, then bit 0 … {binary.bits - 1} of its codes (white = channel "
                          "positive)")  # fmt: skip
        elif binary is not None:
            base = blank_image_code(model)
            flips = code_tiles(model, bit_flip_codes(model, base), context=context)
            bits = tile_mosaic(flips, columns=min(binary.bits, 16))
            bits_title = f"code {base} (a black image's) with bit 0, 1, … {binary.bits - 1} flipped"
    finally:
        model.train(was_training)

    what = f"{model.codebook_size} codes" if len(shown) == model.codebook_size else \
        f"the {len(shown)} most used of {model.codebook_size} codes"  # fmt: skip
    tiles_title = f"{what}, {context} context, " + ("most used first (dead: red cross)" if usage is not None
                                                    else "in code order (no images: no usage)")  # fmt: skip
    if usage is None:
        if bits is None:
            figure, ax = plt.subplots(figsize=(7, 7.4), layout="constrained")
            _show(ax, mosaic, tiles_title)
            return figure
        figure, (ax, bits_ax) = plt.subplots(2, 1, figsize=(7, 10), layout="constrained", height_ratios=(3, 1))
        _show(ax, mosaic, tiles_title)
        _show(bits_ax, bits, bits_title)
        return figure
    rows = 2 if bits is None else 3
    figure = plt.figure(figsize=(14, 7.4 if bits is None else 10.4), layout="constrained")
    grid = figure.add_gridspec(rows, 2, width_ratios=(1, 1), height_ratios=(1, 1.25, 1)[:rows])
    _show(figure.add_subplot(grid[:2, 0]), mosaic, tiles_title)
    if bits is not None:
        _show(figure.add_subplot(grid[2, :]), bits, bits_title)
    usage_histogram(usage, figure.add_subplot(grid[0, 1]))
    ax = figure.add_subplot(grid[1, 1])
    _show(ax, patches, f"patches of the {len(top)} most used codes (cell of {model.downsample_factor} px in red, "
                       "with one cell around)")  # fmt: skip
    step = patches.height / max(1, len(top))
    ax.set_yticks([step * (row + 0.5) for row in range(len(top))],
                  [f"code {code}: {float(usage.counts[code] / usage.counts.sum()):.1%}" for code in top])  # fmt: skip
    ax.tick_params(axis="y", length=0, labelsize=8)
    return figure


def save_figure(figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write a matplotlib figure through a temporary file (never half-written) and close it."""
    plt = _pyplot()
    try:
        with atomic_file(path) as temporary:
            figure.savefig(temporary, dpi=dpi)
    finally:
        plt.close(figure)
    return Path(path)


def write_codebook_figure(model, path: str | os.PathLike, images: torch.Tensor | None = None, **kwargs) -> Path:
    """`codebook_figure(model, images, **kwargs)` saved to `path` (a PNG): what a training run writes at its end."""
    return save_figure(codebook_figure(model, images, **kwargs), path)


def _positions(shown: torch.LongTensor, codes: torch.LongTensor | None) -> torch.LongTensor | None:
    """Where `codes` sit in `shown` (mosaic positions of the dead codes)."""
    if codes is None:
        return None
    wanted = set(codes.tolist())
    return torch.tensor([index for index, code in enumerate(shown.tolist()) if code in wanted], dtype=torch.long)


def _show(ax, picture, title: str) -> None:
    ax.imshow(picture, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
