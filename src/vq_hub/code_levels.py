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


def code_depth(quantizer) -> int:
    """Codes per position of a level's quantizer: a residual quantizer's depth (its codes `(B, depth, h, w)`), else 1
    (codes `(B, h, w)`)."""
    return int(getattr(quantizer, "depth", 1))


def code_depths(tokenizer) -> tuple[int, ...]:
    """Each level's `code_depth`, top first."""
    return tuple(code_depth(quantizer) for quantizer in quantizers(tokenizer).values())


def codebook_counts(quantizer, codes: torch.Tensor) -> torch.Tensor:
    """One histogram per codebook of a level's codes, `(num_codebooks, K)`: a residual quantizer with a codebook per
    depth has one row per depth; every other quantizer (a shared residual codebook too) one row of all its codes."""
    from .metrics import code_counts

    if code_depth(quantizer) > 1 and getattr(quantizer, "num_codebooks", 1) > 1:
        return torch.stack([code_counts(codes[:, depth], quantizer.codebook_size) for depth in range(codes.shape[1])])
    return code_counts(codes, quantizer.codebook_size).unsqueeze(0)


def usage_and_perplexity(counts: torch.Tensor) -> tuple[float, float]:
    """Codebook usage and perplexity of `codebook_counts`, each the mean over codebooks."""
    from .metrics import codebook_usage, perplexity

    return (sum(float(codebook_usage(row)) for row in counts) / len(counts),
            sum(float(perplexity(row)) for row in counts) / len(counts))  # fmt: skip


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
    named with `level_prefix` (the training scripts log them; a collapsing level shows); a residual quantizer's
    figures at each depth too, as `depth0_perplexity`…"""
    names = ("codebook_loss", "commitment_loss", "perplexity", "codebook_usage")
    figures = {}
    for level, quantizer in quantizers(tokenizer).items():
        prefix = level_prefix(level)
        for name in names:
            figures[prefix + name] = getattr(output, prefix + name).detach()
        for name in ("perplexity", "codebook_usage"):
            per_depth = getattr(output, f"{prefix}depth_{name}", None)
            for depth, value in enumerate(per_depth if per_depth is not None else ()):
                figures[f"{prefix}depth{depth}_{name}"] = value.detach()
        restarts = getattr(quantizer, "num_restarts", None)
        figures[prefix + "dead_code_restarts"] = restarts if restarts is not None else torch.zeros((), dtype=torch.long)
    return figures


class LevelView:
    """One level of a two-level tokenizer seen as a single-level one — `codebook_size`, `downsample_factor`,
    `config`, `tokenize` and `detokenize` of that level's grids — so that what draws a `VQVAEModel`'s codebook (tiles,
    usage, patches) draws each level's. The other level is held at the commonest code of a black image (the
    background of most datasets), so a tile shows what this level's code adds."""

    def __init__(self, tokenizer, level: str):
        if level not in level_names(tokenizer) or not is_hierarchical(tokenizer):
            raise ValueError(f"`level` must be one of {level_names(tokenizer)} of a two-level tokenizer, got {level!r}")
        self.tokenizer, self.level, self.config = tokenizer, level, tokenizer.config
        self.codebook_size = quantizers(tokenizer)[level].codebook_size
        self.ratio = tokenizer.top_downsample_factor // tokenizer.downsample_factor
        self.downsample_factor = tokenizer.top_downsample_factor if level == "top" else tokenizer.downsample_factor
        self._blank = None

    def parameters(self):
        return self.tokenizer.parameters()

    @property
    def training(self) -> bool:
        return self.tokenizer.training

    def train(self, mode: bool = True):
        self.tokenizer.train(mode)
        return self

    def eval(self):
        return self.train(False)

    @torch.no_grad()
    def tokenize(self, images: torch.Tensor) -> torch.LongTensor:
        return self.tokenizer.tokenize(images)[level_names(self.tokenizer).index(self.level)]

    @torch.no_grad()
    def detokenize(self, codes: torch.LongTensor) -> torch.Tensor:
        """`(B, h, w)` codes of this level → images `(B, C, h·f, w·f)`, the other level at the black image's code (a
        bottom grid is padded to whole top cells with it, and the padding cropped off)."""
        top_code, bottom_code = self._blank_codes()
        batch, height, width = codes.shape
        if self.level == "top":
            bottom = codes.new_full((batch, height * self.ratio, width * self.ratio), bottom_code)
            return self.tokenizer.detokenize((codes, bottom))
        padded_height, padded_width = -(-height // self.ratio) * self.ratio, -(-width // self.ratio) * self.ratio
        bottom = codes.new_full((batch, padded_height, padded_width), bottom_code)
        bottom[:, :height, :width] = codes
        top = codes.new_full((batch, padded_height // self.ratio, padded_width // self.ratio), top_code)
        images = self.tokenizer.detokenize((top, bottom))
        return images[..., : height * self.downsample_factor, : width * self.downsample_factor]

    def _blank_codes(self) -> tuple[int, ...]:
        """The commonest code of a black image in each grid (each level; each depth of a `DepthView`)."""
        if self._blank is None:
            from .data import image_size

            height, width = image_size(self.config.sample_size)
            device = next(self.tokenizer.parameters()).device
            blank = torch.full((1, self.config.in_channels, height, width), -1.0, device=device)
            grids = self.tokenizer.tokenize(blank)
            grids = grids[0] if isinstance(grids, torch.Tensor) else grids  # a DepthView: the depths of one grid
            self._blank = tuple(int(torch.bincount(grid.flatten().cpu()).argmax()) for grid in grids)
        return self._blank


class DepthView(LevelView):
    """One depth of a residual tokenizer seen as a single-level one (`(B, h, w)` codes of that depth), so that the
    codebook pictures draw each depth's codebook: a code at depth `d` is decoded over the black image's codes at the
    depths before it, the later depths left out (`detokenize(codes, depths=d + 1)`), so a tile shows what the code
    adds at its depth."""

    def __init__(self, tokenizer, depth: int):
        if code_depth(tokenizer.quantize) < 2 or not 0 <= depth < code_depth(tokenizer.quantize):
            raise ValueError(f"`depth` must be a depth of a residual tokenizer, got {depth!r}")
        self.tokenizer, self.depth, self.config = tokenizer, depth, tokenizer.config
        self.level = f"depth{depth}"
        self.codebook_size = tokenizer.codebook_size
        self.downsample_factor = tokenizer.downsample_factor
        self._blank = None

    @torch.no_grad()
    def tokenize(self, images: torch.Tensor) -> torch.LongTensor:
        return self.tokenizer.tokenize(images)[:, self.depth]

    @torch.no_grad()
    def detokenize(self, codes: torch.LongTensor) -> torch.Tensor:
        blank = self._blank_codes()
        full = torch.stack([codes.new_full(codes.shape, code) for code in blank], dim=1)
        full[:, self.depth] = codes
        return self.tokenizer.detokenize(full, depths=self.depth + 1)


def level_views(tokenizer) -> dict:
    """Each level by name as something that behaves like a single-level tokenizer (the tokenizer itself for one);
    a residual tokenizer's depths as `depth0`, `depth1`…"""
    if not is_hierarchical(tokenizer):
        depth = code_depth(tokenizer.quantize)
        if depth > 1:
            return {f"depth{index}": DepthView(tokenizer, index) for index in range(depth)}
        return {SINGLE_LEVEL[0]: tokenizer}
    return {level: LevelView(tokenizer, level) for level in level_names(tokenizer)}
