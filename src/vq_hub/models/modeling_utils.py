"""What every vq_hub diffusers model adds to `ModelMixin`: atomic saves and a clear error for missing weights."""

import os
from pathlib import Path

from ..utils.io import atomic_directory


class AtomicSaveMixin:
    """Put before `ModelMixin` in the bases: `class Model(AtomicSaveMixin, ModelMixin, ConfigMixin)`."""

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """As diffusers' `save_pretrained`, but written to a temporary folder and renamed: never half-written."""
        if kwargs.get("push_to_hub") or not kwargs.get("is_main_process", True):
            # diffusers derives the Hub repo name from `save_directory` and uploads from it: keep the real path.
            super().save_pretrained(save_directory, **kwargs)
            return
        with atomic_directory(save_directory) as staging:
            super().save_pretrained(staging, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """As diffusers' `from_pretrained`, with a clear error for a local folder that holds no weights."""
        folder = Path(pretrained_model_name_or_path, kwargs.get("subfolder") or "")
        if folder.is_dir() and not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
            raise FileNotFoundError(
                f"`pretrained_model_name_or_path` {str(folder)!r} holds no weights: expected "
                "diffusion_pytorch_model.safetensors (written by `save_pretrained`) next to config.json"
            )
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
