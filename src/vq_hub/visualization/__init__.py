"""Pictures of what a tokenizer learned: code tiles, usage histograms, the patches behind each code, code maps."""

from .codebook import CodebookUsage, code_map, code_tiles, measure_usage, tile_mosaic, top_code_patches
from .figures import codebook_figure, save_figure, usage_histogram, write_codebook_figure

__all__ = [
    "CodebookUsage",
    "code_map",
    "code_tiles",
    "codebook_figure",
    "measure_usage",
    "save_figure",
    "tile_mosaic",
    "top_code_patches",
    "usage_histogram",
    "write_codebook_figure",
]
