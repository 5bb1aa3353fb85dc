"""What every vq_hub diffusers model adds to `ModelMixin`: atomic saves that leave no stale weights, and clear errors
for missing or damaged weights."""

import os
from pathlib import Path

from diffusers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFETENSORS_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME

from ..utils.io import atomic_directory, check_safetensors_files


def weight_file_patterns(variant: str | None = None) -> list[str]:
    """The names diffusers gives a model's weights of `variant` — whole files, index files and shards — so a new
    save can remove those of the old one it replaces (an old index would otherwise win over a new unsharded file)."""

    def with_variant(name: str) -> str:
        stem, extension = name.rsplit(".", 1)
        return f"{stem}.{variant}.{extension}" if variant else name

    files = [with_variant(SAFETENSORS_WEIGHTS_NAME), with_variant(WEIGHTS_NAME)]
    shards = [name.replace(".safetensors", "-?????-of-?????.safetensors").replace(".bin", "-?????-of-?????.bin")
              for name in files]  # fmt: skip
    return files + shards + [with_variant(SAFE_WEIGHTS_INDEX_NAME), with_variant(WEIGHTS_INDEX_NAME)]


class AtomicSaveMixin:
    """Put before `ModelMixin` in the bases: `class Model(AtomicSaveMixin, ModelMixin, ConfigMixin)`."""

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """As diffusers' `save_pretrained`, but written to a temporary folder and swapped in: never half-written, and
        the weight files of an earlier save of the same variant (shards, index) are removed with it."""
        if kwargs.get("push_to_hub") or not kwargs.get("is_main_process", True):
            # diffusers derives the Hub repo name from `save_directory` and uploads from it: keep the real path.
            super().save_pretrained(save_directory, **kwargs)
            return
        with atomic_directory(save_directory, replaces=weight_file_patterns(kwargs.get("variant"))) as staging:
            super().save_pretrained(staging, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """As diffusers' `from_pretrained`, with clear errors for a local folder that holds no weights or a damaged
        weights file."""
        folder = Path(pretrained_model_name_or_path, kwargs.get("subfolder") or "")
        if folder.is_dir():
            if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
                raise FileNotFoundError(
                    f"`pretrained_model_name_or_path` {str(folder)!r} holds no weights: expected "
                    "diffusion_pytorch_model.safetensors (written by `save_pretrained`) next to config.json"
                )
            check_safetensors_files(folder)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
