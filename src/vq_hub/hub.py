"""Sharing on the Hub: our own model cards (diffusers' default advertises the wrong loader) and the upload call."""

import json
import os
from pathlib import Path

from huggingface_hub import HfApi

TOKENIZER_CARD = """---
library_name: vq_hub
tags:
- vq_hub
- image-tokenizer
- {quantizer_tag}
---

# {title}

A discrete image tokenizer ({description}) trained with
[vq_hub](https://pypi.org/project/vq_hub/): images of {resolution}×{resolution} pixels become {grid}×{grid} grids of
codes from a codebook of {codebook_size}.

```python
import torch
from vq_hub import VQModel

model = VQModel.from_pretrained("{repo_id}").eval()
images = torch.rand(1, {channels}, {resolution}, {resolution}) * 2 - 1   # pixels in [-1, 1]
codes = model.tokenize(images)                  # LongTensor (1, {grid}, {grid})
reconstruction = model.detokenize(codes)
```

## Training

{training}

## Evaluation

{evaluation}
"""


def write_tokenizer_card(
    folder: str | os.PathLike,
    repo_id: str,
    training: str = "Not recorded.",
    evaluation: dict | None = None,
) -> Path:
    """Write `README.md` for the `VQModel` saved in `folder` (its config.json is read for the facts)."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    factor = 2 ** (len(config["block_out_channels"]) - 1)
    resolution = config.get("sample_size", 32)
    quantizer = config.get("quantizer_type", "vector")
    description = {"vector": "VQ-VAE / VQ-GAN", "gumbel": "Gumbel-softmax VQ", "fsq": "finite scalar quantization"}
    if evaluation:
        rows = "\n".join(f"| {name} | {value:.4g} |" if isinstance(value, float) else f"| {name} | {value} |"
                         for name, value in evaluation.items())  # fmt: skip
        evaluation_text = f"| metric | value |\n|---|---|\n{rows}"
    else:
        evaluation_text = "Not evaluated."
    card = TOKENIZER_CARD.format(
        title=repo_id.split("/")[-1],
        repo_id=repo_id,
        quantizer_tag=f"{quantizer}-quantization",
        description=description.get(quantizer, quantizer),
        resolution=resolution,
        grid=resolution // factor,
        codebook_size=config["num_vq_embeddings"],
        channels=config.get("in_channels", 3),
        training=training,
        evaluation=evaluation_text,
    )
    path = folder / "README.md"
    path.write_text(card)
    return path


def push_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload with vq_hub",
    ignore_patterns: list[str] | None = None,
    api: HfApi | None = None,
) -> str:
    """Create `repo_id` if needed and upload `folder` (with the model card already in it); returns the commit URL."""
    folder = Path(folder)
    if not (folder / "config.json").is_file() and not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"`folder` {str(folder)!r} holds no config.json or model_index.json to upload")
    api = api or HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id, folder_path=str(folder), commit_message=commit_message, ignore_patterns=ignore_patterns
    )
    return str(getattr(commit, "commit_url", commit))
