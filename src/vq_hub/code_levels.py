"""The one boundary between single-level and hierarchical tokenizers.

A `VQVAEModel` tokenizes into one code grid (a tensor); a `HierarchicalVQModel` into a tuple of grids, top first.
The models keep their natural API. Everything outside them that handles codes of either kind (pipelines, the CLI,
`encode_dataset.py`, the evaluation harness, the codec) goes through these helpers, which always speak in tuples of
levels: one entry for a single level, named `"codes"`, two for VQ-VAE-2, named `"top"` and `"bottom"`.
"""

import torch

SINGLE_LEVEL = ("codes",)


def level_names(tokenizer) -> tuple[str, ...]:
    """`("codes",)` for a single-level tokenizer, `("top", "bottom")` for a hierarchical one."""
    return tuple(getattr(tokenizer, "level_names", SINGLE_LEVEL))


def is_hierarchical(tokenizer) -> bool:
    return len(level_names(tokenizer)) > 1


def quantizers(tokenizer) -> dict:
    """Each level's quantizer by level name, top first."""
    return dict(tokenizer.quantizers) if is_hierarchical(tokenizer) else {SINGLE_LEVEL[0]: tokenizer.quantize}


def codebook_sizes(tokenizer) -> tuple[int, ...]:
    return tuple(quantizer.codebook_size for quantizer in quantizers(tokenizer).values())


def code_grid_sizes(tokenizer, height: int | None = None, width: int | None = None) -> tuple[tuple[int, int], ...]:
    """Each level's `(h, w)` code grid for images of `height × width` (default: the tokenizer's `sample_size`)."""
    if height is None or width is None:
        from .data import image_size

        height, width = image_size(tokenizer.config.sample_size)
    if is_hierarchical(tokenizer):
        return tuple(tokenizer.code_grid_sizes(height, width))
    return (tuple(tokenizer.code_grid_size(height, width)),)


def column_name(level: str) -> str:
    """The column (or array) name of a level's codes in files: `codes`, `top_codes`, `bottom_codes`."""
    return level if level == SINGLE_LEVEL[0] else f"{level}_codes"


def as_levels(codes) -> tuple[torch.Tensor, ...]:
    """Codes of either kind as a tuple of grids: a tensor becomes a 1-tuple, a tuple or list stays as it is."""
    if isinstance(codes, torch.Tensor):
        return (codes,)
    if isinstance(codes, (tuple, list)) and codes and all(isinstance(grid, torch.Tensor) for grid in codes):
        return tuple(codes)
    raise TypeError(f"codes must be a tensor or a tuple of tensors (top first), got {type(codes).__name__}")


def from_levels(tokenizer, levels):
    """A tuple of grids as `tokenizer.detokenize` takes it: the one tensor of a single level, the tuple otherwise."""
    levels = as_levels(levels)
    names = level_names(tokenizer)
    if len(levels) != len(names):
        raise ValueError(f"this {type(tokenizer).__name__} has {len(names)} code level(s) {names}, got "
                         f"{len(levels)} grid(s)")  # fmt: skip
    return levels if len(names) > 1 else levels[0]


def tokenize_levels(tokenizer, images: torch.Tensor) -> tuple[torch.LongTensor, ...]:
    """`tokenizer.tokenize(images)` as a tuple of grids, top first."""
    return as_levels(tokenizer.tokenize(images))


def detokenize_levels(tokenizer, levels) -> torch.Tensor:
    """Images of a tuple of grids, top first."""
    return tokenizer.detokenize(from_levels(tokenizer, levels))


def level_prefix(level: str) -> str:
    """How a level's figures are named in logs and summaries: `perplexity` for a single level, `top_perplexity`…"""
    return "" if level == SINGLE_LEVEL[0] else f"{level}_"


def forward_statistics(tokenizer, output) -> dict[str, torch.Tensor]:
    """Each level's codebook loss, commitment loss, perplexity, usage and dead-code restarts from a `forward` output,
    named with `level_prefix` (the training scripts log them; a collapsing level shows)."""
    names = ("codebook_loss", "commitment_loss", "perplexity", "codebook_usage")
    figures = {}
    for level, quantizer in quantizers(tokenizer).items():
        prefix = level_prefix(level)
        for name in names:
            figures[prefix + name] = getattr(output, prefix + name).detach()
        restarts = getattr(quantizer, "num_restarts", None)
        figures[prefix + "dead_code_restarts"] = restarts if restarts is not None else torch.zeros((), dtype=torch.long)
    return figures
