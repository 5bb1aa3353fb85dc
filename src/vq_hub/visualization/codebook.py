"""Pictures of a tokenizer's codebook: what each code draws, how often each is used, which image patches map to it.

The pictures are PIL images (tiles, patches, code maps) and matplotlib figures (the usage histogram, the combined
page); matplotlib is imported lazily with the Agg backend, so nothing here needs a display.

A code stands for one cell of the code grid, a patch of `downsample_factor` × `downsample_factor` pixels. The
decoder's receptive field is larger (a code also shapes its neighbours' pixels), but the cell is the patch that
"maps to" a code, and the one people expect to see.
"""

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..data import image_size, tensor_to_images
from ..metrics import code_counts, codebook_usage, perplexity

CONTEXTS = ("uniform", "neutral")
DEAD_COLOUR = (220, 40, 40)
PLANE_SEPARATOR = (150, 150, 150)


@dataclass
class CodebookUsage:
    """The codes of a set of images and what they say about the codebook.

    Args:
        codes (`torch.LongTensor` `(N, h, w)`): Every image's code grid.
        counts (`torch.Tensor` `(K,)`): How often each code occurs.
    """

    codes: torch.LongTensor
    counts: torch.Tensor

    @property
    def perplexity(self) -> float:
        return float(perplexity(self.counts))

    @property
    def usage(self) -> float:
        """Fraction of the codebook used at least once."""
        return float(codebook_usage(self.counts))

    @property
    def dead_codes(self) -> torch.LongTensor:
        """Codes that never occur."""
        return torch.nonzero(self.counts == 0).flatten()

    @property
    def order(self) -> torch.LongTensor:
        """Codes from the most used to the least (ties by id); the dead ones last."""
        return torch.from_numpy(np.lexsort((np.arange(len(self.counts)), -self.counts.numpy()))).long()


@torch.no_grad()
def measure_usage(model, images: torch.Tensor, batch_size: int = 256) -> CodebookUsage:
    """Tokenize `images` `(N, C, H, W)` in [-1, 1] with `model` (a `VQVAEModel`) and count the codes."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or len(images) == 0:
        raise ValueError(f"`images` must be a non-empty (N, C, H, W) tensor, got {_shape(images)}")
    device = next(model.parameters()).device
    codes = torch.cat([model.tokenize(images[i : i + batch_size].to(device)).cpu()
                       for i in range(0, len(images), batch_size)])  # fmt: skip
    return CodebookUsage(codes=codes, counts=code_counts(codes, model.codebook_size).cpu())


@torch.no_grad()
def code_tiles(model, codes: torch.LongTensor | None = None, context: str = "neutral", neutral_code: int | None = None,
               batch_size: int = 256) -> torch.Tensor:  # fmt: skip
    """What each code draws, decoded by `model`: `(len(codes), C, s, s)` in [-1, 1] (all codes by default).

    `context="uniform"` decodes a 4×4 grid filled with the code and keeps the central 2×2 cells (s = 2f, away from
    the image border): the texture the code paints. `context="neutral"` decodes the code alone at the centre of a 5×5
    grid of `neutral_code` (by default the code of a black image, the background of most datasets) and keeps the
    central 3×3 cells (s = 3f): the code and how it spreads into its neighbours.
    """
    if context not in CONTEXTS:
        raise ValueError(f"`context` must be one of {CONTEXTS}, got {context!r}")
    size = model.codebook_size
    codes = torch.arange(size) if codes is None else torch.as_tensor(codes).long().flatten()
    if len(codes) and (codes.min() < 0 or codes.max() >= size):
        raise ValueError(f"`codes` must lie in [0, {size - 1}], got [{int(codes.min())}, {int(codes.max())}]")
    device = next(model.parameters()).device
    factor = model.downsample_factor
    if context == "uniform":
        cells, keep = 4, 2
    else:
        cells, keep = 5, 3
        if neutral_code is None:
            neutral_code = blank_image_code(model)
        if not 0 <= neutral_code < size:
            raise ValueError(f"`neutral_code` must lie in [0, {size - 1}], got {neutral_code}")
    start, stop = (cells - keep) // 2 * factor, ((cells - keep) // 2 + keep) * factor
    tiles = []
    for chunk in codes.split(batch_size):
        if context == "uniform":
            grids = chunk[:, None, None].expand(-1, cells, cells)
        else:
            grids = torch.full((len(chunk), cells, cells), neutral_code, dtype=torch.long)
            grids[:, cells // 2, cells // 2] = chunk
        images = model.detokenize(grids.to(device)).float().clamp(-1, 1).cpu()
        tiles.append(images[..., start:stop, start:stop])
    return torch.cat(tiles) if tiles else torch.empty(0, model.config.out_channels, stop - start, stop - start)


def blank_image_code(model) -> int:
    """The most frequent code of a black image (all pixels -1): the 'nothing here' of most datasets."""
    height, width = image_size(model.config.sample_size)
    blank = torch.full((1, model.config.in_channels, height, width), -1.0, device=next(model.parameters()).device)
    return int(torch.bincount(model.tokenize(blank).flatten().cpu()).argmax())


def tile_mosaic(tiles: torch.Tensor, order: torch.LongTensor | None = None, dead: torch.LongTensor | None = None,
                columns: int | None = None, scale: int = 4, padding: int = 1) -> Image.Image:  # fmt: skip
    """Tiles `(K, C, s, s)` (as `code_tiles` returns for all codes) laid out row by row in `order` (code order by
    default), enlarged `scale` times; codes in `dead` get a red frame and a red cross."""
    count = len(tiles) if order is None else len(order)
    order = torch.arange(len(tiles)) if order is None else torch.as_tensor(order).long()
    dead_set = set(torch.as_tensor(dead).tolist()) if dead is not None else set()
    columns = columns or max(1, int(np.ceil(np.sqrt(count))))
    rows = int(np.ceil(count / columns))
    side = tiles.shape[-1] * scale
    step = side + 2 * padding
    mosaic = Image.new("RGB", (columns * step, rows * step), (255, 255, 255))
    draw = ImageDraw.Draw(mosaic)
    pictures = tensor_to_images(tiles[order])
    for index, (code, picture) in enumerate(zip(order.tolist(), pictures)):
        left, top = (index % columns) * step + padding, (index // columns) * step + padding
        mosaic.paste(picture.convert("RGB").resize((side, side), Image.Resampling.NEAREST), (left, top))
        if code in dead_set:
            box = (left, top, left + side - 1, top + side - 1)
            draw.rectangle(box, outline=DEAD_COLOUR, width=max(1, scale // 2))
            draw.line(box, fill=DEAD_COLOUR, width=max(1, scale // 2))
    return mosaic


def top_code_patches(images: torch.Tensor, usage: CodebookUsage, factor: int, num_codes: int = 8, num_patches: int = 8,
                     margin: int = 1, scale: int = 4) -> tuple[Image.Image, list[int]]:  # fmt: skip
    """For the `num_codes` most used codes, a row of `num_patches` image patches that map to them.

    Each patch is the code's cell (`factor` pixels square, outlined in red) with `margin` cells of surroundings, the
    occurrences spread evenly over the data set. Returns the picture and the codes of its rows.
    """
    codes = usage.codes
    if len(images) != len(codes):
        raise ValueError(f"`images` ({len(images)}) and `usage.codes` ({len(codes)}) must describe the same images")
    top = [code for code in usage.order[:num_codes].tolist() if usage.counts[code] > 0]
    pad = margin * factor
    padded = torch.nn.functional.pad(images.float(), (pad, pad, pad, pad), value=-1.0)
    side = (2 * margin + 1) * factor * scale
    step = side + 2
    picture = Image.new("RGB", (num_patches * step, max(1, len(top)) * step), (255, 255, 255))
    draw = ImageDraw.Draw(picture)
    for row, code in enumerate(top):
        where = torch.nonzero(codes == code)
        chosen = where[np.linspace(0, len(where) - 1, min(num_patches, len(where))).round().astype(int)]
        crops = [padded[n, :, i * factor : i * factor + factor + 2 * pad, j * factor : j * factor + factor + 2 * pad]
                 for n, i, j in chosen.tolist()]  # fmt: skip
        for column, crop in enumerate(tensor_to_images(torch.stack(crops))):
            left, top_edge = column * step + 1, row * step + 1
            picture.paste(crop.convert("RGB").resize((side, side), Image.Resampling.NEAREST), (left, top_edge))
            inner = pad * scale
            draw.rectangle((left + inner - 1, top_edge + inner - 1, left + side - inner, top_edge + side - inner),
                           outline=DEAD_COLOUR, width=2)  # fmt: skip
    return picture, top


def code_map(codes: torch.LongTensor, codebook_size: int, cell: int = 32, show_ids: bool = True) -> Image.Image:
    """One code grid `(h, w)` as a picture: a colour per code id (neighbouring ids get distant hues), the id written in
    each cell when `show_ids`."""
    import colorsys

    codes = torch.as_tensor(codes)
    if codes.ndim != 2:
        raise ValueError(f"`codes` must be one grid (h, w), got shape {tuple(codes.shape)}")
    height, width = codes.shape
    picture = Image.new("RGB", (width * cell, height * cell))
    draw = ImageDraw.Draw(picture)
    for (i, j), code in np.ndenumerate(codes.numpy()):
        hue = (int(code) * 0.6180339887) % 1.0
        lightness = 0.35 + 0.3 * ((int(code) * 7 % codebook_size) / max(1, codebook_size - 1))
        colour = tuple(round(255 * c) for c in colorsys.hls_to_rgb(hue, lightness, 0.75))
        box = (j * cell, i * cell, (j + 1) * cell - 1, (i + 1) * cell - 1)
        draw.rectangle(box, fill=colour)
        if show_ids:
            text_colour = (0, 0, 0) if lightness > 0.5 else (255, 255, 255)
            draw.text(((j + 0.5) * cell, (i + 0.5) * cell), str(int(code)), fill=text_colour, anchor="mm")
    return picture


def binary_quantizer(model):
    """The model's `BinaryQuantizer` (LFQ, BSQ), or None: their codes are bit patterns, drawn as bit planes."""
    from ..quantizers import BinaryQuantizer

    quantizer = getattr(model, "quantize", None)
    is_single_level = not hasattr(model, "top_quantize")
    return quantizer if isinstance(quantizer, BinaryQuantizer) and is_single_level else None


@torch.no_grad()
def bit_planes(model, images: torch.Tensor, num_images: int = 4, scale: int = 4, padding: int = 2) -> Image.Image:
    """For the first `num_images` images, a row: the image, then bit `i` of every code of its grid as a black (0) /
    white (1) picture, one per bit (a binary quantizer's code is its bits; each bit plane is what one latent channel
    says about the image, cell by cell)."""
    quantizer = binary_quantizer(model)
    if quantizer is None:
        raise ValueError("bit planes need a tokenizer with a binary quantizer (quantizer_type 'lfq' or 'bsq')")
    images = images[:num_images]
    device = next(model.parameters()).device
    bits = quantizer.codes_to_bits(model.tokenize(images.to(device)).cpu())  # (N, h, w, bits)
    factor = model.downsample_factor
    side_h, side_w = images.shape[-2] * scale, images.shape[-1] * scale
    columns = 1 + quantizer.bits
    size = (columns * (side_w + padding), len(images) * (side_h + padding))
    picture = Image.new("RGB", size, PLANE_SEPARATOR)  # grey between planes: white is a bit, black the other
    for row, (image, grid) in enumerate(zip(tensor_to_images(images.float().cpu()), bits)):
        top = row * (side_h + padding)
        picture.paste(image.convert("RGB").resize((side_w, side_h), Image.Resampling.NEAREST), (0, top))
        for bit in range(quantizer.bits):
            plane = Image.fromarray((grid[..., bit].numpy() * 255).astype(np.uint8))
            size = (grid.shape[1] * factor * scale, grid.shape[0] * factor * scale)
            plane = plane.resize(size, Image.Resampling.NEAREST)
            picture.paste(plane.convert("RGB"), ((bit + 1) * (side_w + padding), top))
    return picture


def bit_flip_codes(model, base_code: int | None = None) -> torch.LongTensor:
    """`base_code` (by default the code of a black image) with each one of its bits flipped in turn: their tiles show
    what each bit, alone, changes."""
    quantizer = binary_quantizer(model)
    if quantizer is None:
        raise ValueError("bit flips need a tokenizer with a binary quantizer (quantizer_type 'lfq' or 'bsq')")
    base_code = blank_image_code(model) if base_code is None else base_code
    return torch.tensor([base_code ^ (1 << bit) for bit in range(quantizer.bits)], dtype=torch.long)


def _shape(value) -> str:
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__
