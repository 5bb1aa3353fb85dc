"""Sharing on the Hub: our own model cards (diffusers' default advertises the wrong loader) and the upload call."""

import json
import os
from pathlib import Path

from huggingface_hub import HfApi

from .data import image_size
from .utils.io import write_text_atomically

HUB_OPTIONS = ("cache_dir", "revision", "token", "local_files_only", "force_download")


def resolve_folder(
    name_or_path: str | os.PathLike, argument: str = "pretrained_model_name_or_path", **hub_options
) -> Path:
    """A local folder as is; a Hub repository id (`owner/name`) is fetched whole into the HF cache with
    `snapshot_download` (which honours `HF_HUB_OFFLINE` and the cache). Anything else is a FileNotFoundError naming
    `argument` — a path such as `./missing` never reaches the Hub as a malformed id."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"`{argument}` {str(name_or_path)!r} is a file, not a folder")
    if _looks_local(str(name_or_path)):  # e.g. checkpoints/fashion-mnist-vqvea: a typo, not a Hub id to fetch
        raise FileNotFoundError(f"`{argument}` {str(name_or_path)!r}: no such folder{_closest_folder(path)}")
    try:
        validate_repo_id(str(name_or_path))
        is_repo_id = str(name_or_path).count("/") == 1
    except HFValidationError:
        is_repo_id = False
    if not is_repo_id:
        raise FileNotFoundError(f"`{argument}` {str(name_or_path)!r}: no such folder (nor a Hub id `owner/name`)"
                                f"{_closest_folder(path)}")  # fmt: skip
    try:
        return Path(snapshot_download(str(name_or_path), **hub_options))
    except Exception as error:  # not found, offline without a cached copy, no access, …
        raise FileNotFoundError(
            f"`{argument}` {str(name_or_path)!r} is not a local folder, and as a Hub repository it could not be fetched "
            f"or found in the cache: {type(error).__name__}: {error}"
        ) from error


def _looks_local(name: str) -> bool:
    """A path rather than a Hub id: it starts like one (./, ../, /, ~) or its first part is a local folder."""
    if name.startswith(("./", "../", "/", "~", ".\\")):
        return True
    return Path(name).expanduser().parent.is_dir() and str(Path(name).parent) not in ("", ".")


def _closest_folder(path: Path) -> str:
    """The suffix "; did you mean …?" with the closest folder name beside `path` (difflib), or ""."""
    import difflib

    parent = path.parent if str(path.parent) else Path(".")
    try:
        names = [entry.name for entry in parent.iterdir() if entry.is_dir() and not entry.name.startswith(".")]
    except OSError:
        return ""
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
    return f"; did you mean {str(parent / close[0])!r}?" if close else ""


INSTALL_NOTE = (
    "vq_hub is not published on PyPI: install it from its source repository (`pip install -e .` in a checkout of "
    "vq_hub)."
)

TOKENIZER_CARD = """---
library_name: vq_hub
tags:
- vq_hub
- image-tokenizer
- {quantizer_tag}
---

# {title}

A discrete image tokenizer ({description}) trained with vq_hub: images of {height}×{width} pixels become
{grid_h}×{grid_w} grids of codes from a codebook of {codebook_size}. {install}

```python
import torch
from vq_hub import {model_class}

model = {model_class}.from_pretrained("{repo_id}").eval()
images = torch.rand(1, {channels}, {height}, {width}) * 2 - 1   # pixels in [-1, 1]
codes = model.tokenize(images)                  # LongTensor (1, {grid_h}, {grid_w})
reconstruction = model.detokenize(codes)
```

## Training

{training}

## Evaluation

{evaluation}
"""


HIERARCHICAL_TOKENIZER_CARD = """---
library_name: vq_hub
tags:
- vq_hub
- image-tokenizer
- vq-vae-2
---

# {title}

A two-level discrete image tokenizer (VQ-VAE-2) trained with vq_hub: images of {height}×{width} pixels become a
{top_h}×{top_w} grid of top codes (codebook of {top_codebook_size}) and a {grid_h}×{grid_w} grid of bottom codes
(codebook of {codebook_size}) chosen knowing the top. {install}

```python
import torch
from vq_hub import HierarchicalVQModel

model = HierarchicalVQModel.from_pretrained("{repo_id}").eval()
images = torch.rand(1, {channels}, {height}, {width}) * 2 - 1   # pixels in [-1, 1]
top, bottom = model.tokenize(images)            # LongTensors (1, {top_h}, {top_w}) and (1, {grid_h}, {grid_w})
reconstruction = model.detokenize((top, bottom))
top_only = model.detokenize_top(top)            # what the top codes alone carry
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
    """Write `README.md` for the tokenizer (`VQVAEModel`, `MagvitV2Tokenizer` or `HierarchicalVQModel`) saved in
    `folder` (its config.json is read for the facts)."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    if config.get("_class_name") == "HierarchicalVQModel":
        factor = 2 ** (len(config["block_out_channels"]) - 1)
        top_factor = factor * 2 ** (len(config["top_block_out_channels"]) - 1)
        height, width = image_size(config.get("sample_size", 32))
        card = HIERARCHICAL_TOKENIZER_CARD.format(
            title=repo_id.split("/")[-1], repo_id=repo_id, install=INSTALL_NOTE, height=height, width=width,
            channels=config.get("in_channels", 3), grid_h=height // factor, grid_w=width // factor,
            top_h=height // top_factor, top_w=width // top_factor,
            codebook_size=config["bottom_quantizer"]["num_vq_embeddings"],
            top_codebook_size=config["top_quantizer"]["num_vq_embeddings"],
            training=training, evaluation=_evaluation_table(evaluation),
        )  # fmt: skip
        return write_text_atomically(folder / "README.md", card)
    factor = 2 ** (len(config["block_out_channels"]) - 1)
    height, width = image_size(config.get("sample_size", 32))
    quantizer = config.get("quantizer_type", "vector")
    description = {"vector": "VQ-VAE / VQ-GAN", "gumbel": "Gumbel-softmax VQ", "fsq": "finite scalar quantization",
                   "lfq": "lookup-free quantization (MAGVIT-v2)", "bsq": "binary spherical quantization (BSQ-ViT)",
                   "simvq": "SimVQ (frozen codebook, learned linear map)"}  # fmt: skip
    card = TOKENIZER_CARD.format(
        model_class="MagvitV2Tokenizer" if config.get("_class_name") == "MagvitV2Tokenizer" else "VQVAEModel",
        title=repo_id.split("/")[-1],
        repo_id=repo_id,
        quantizer_tag=f"{quantizer}-quantization",
        install=INSTALL_NOTE,
        description=description.get(quantizer, quantizer),
        height=height,
        width=width,
        grid_h=height // factor,
        grid_w=width // factor,
        codebook_size=config["num_vq_embeddings"],
        channels=config.get("in_channels", 3),
        training=training,
        evaluation=_evaluation_table(evaluation),
    ) + _vocabulary_note(folder)
    return write_text_atomically(folder / "README.md", card)


def _class_names(prior: dict, num_classes: int) -> str:
    """The suffix " (0 T-shirt/top, 1 Trouser, …)" when the prior's config records a name per class (`id2label`)."""
    id2label = prior.get("id2label") or {}
    names = [id2label.get(str(i)) for i in range(num_classes)]
    if not num_classes or any(name is None or name == f"LABEL_{i}" for i, name in enumerate(names)):
        return ""
    return " (" + ", ".join(f"{i} {name}" for i, name in enumerate(names)) + ")"


def _vocabulary_note(folder: Path) -> str:
    """A section listing a word-level caption tokenizer's words (what prompts can say), or ""."""
    path = folder / "tokenizer" / "tokenizer.json"
    if not path.is_file():
        return ""
    tokenizer = json.loads(path.read_text())
    vocabulary = (tokenizer.get("model") or {}).get("vocab")
    if not isinstance(vocabulary, dict) or len(vocabulary) > 200:
        return ""
    special = {token.get("content") for token in tokenizer.get("added_tokens") or []}
    words = [word for word in sorted(vocabulary, key=vocabulary.get) if word not in special]
    return (f"\n## Vocabulary\n\nPrompts are read word by word; the tokenizer knows these {len(words)} words (a prompt "
            f"whose words are mostly unknown is refused):\n\n{' '.join(f'`{word}`' for word in words)}\n")  # fmt: skip


PIPELINE_CARD = """---
library_name: vq_hub
pipeline_tag: {pipeline_tag}
tags:
{tags}
---

# {title}

A `{class_name}` trained with vq_hub: {description}. It samples {grids}{classes}, and its tokenizer (`vqvae/`)
decodes them into {height}×{width} images. {install}

```python
import torch
import vq_hub  # registers vq_hub's pipelines with diffusers
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained("{repo_id}")   # a {class_name} (vq_hub.VQPipeline.from_pretrained works too)
images = pipe({call}, generator=torch.Generator().manual_seed(0)).images
```

## Training

{training}

## Evaluation

{evaluation}
"""


def _evaluation_table(evaluation: dict | None) -> str:
    if not evaluation:
        return "Not evaluated."
    rows = "\n".join(f"| {name} | {value:.4g} |" if isinstance(value, float) else f"| {name} | {value} |"
                     for name, value in evaluation.items())  # fmt: skip
    return f"| metric | value |\n|---|---|\n{rows}"


def write_pipeline_card(
    folder: str | os.PathLike,
    repo_id: str,
    pipeline_class: type,
    training: str | None = None,
    evaluation: dict | None = None,
    call: str | None = None,
) -> Path:
    """Write `README.md` for the pipeline saved in `folder` (its prior's and tokenizer's configs give the facts);
    `call` replaces the example call's arguments (the text pipelines show a prompt)."""
    folder = Path(folder)
    prior = json.loads((folder / pipeline_class.prior_component / "config.json").read_text())
    vqvae = json.loads((folder / "vqvae" / "config.json").read_text())
    factor = 2 ** (len(vqvae["block_out_channels"]) - 1 + len(vqvae.get("top_block_out_channels", [0])) - 1)
    grid_h, grid_w = prior["code_grid_size"]  # a VQ-VAE-2 pipeline's prior component is its top prior
    grids = f"{grid_h}×{grid_w} grids of codes from a codebook of {prior['codebook_size']}"
    if (folder / "bottom_prior" / "config.json").is_file():
        bottom = json.loads((folder / "bottom_prior" / "config.json").read_text())
        grids = (f"{grid_h}×{grid_w} grids of top codes (codebook of {prior['codebook_size']}), then "
                 f"{bottom['code_grid_size'][0]}×{bottom['code_grid_size'][1]} grids of bottom codes given them "
                 f"(codebook of {bottom['codebook_size']})")  # fmt: skip
    num_classes = prior.get("num_classes", 0)
    batch_size = min(4, num_classes) if num_classes else 4
    labels = f"class_labels={list(range(batch_size))}" if num_classes else ""
    # Text (or any prefix) conditioning says so through the class's card_tags; "unconditional" only when nothing is.
    conditioning = ["class-conditional" if num_classes else "" if prior.get("prefix_length") else "unconditional"]
    card = PIPELINE_CARD.format(
        title=repo_id.split("/")[-1],
        repo_id=repo_id,
        class_name=pipeline_class.__name__,
        pipeline_tag=pipeline_class.card_pipeline_tag,
        tags="\n".join(f"- {tag}" for tag in ["vq_hub", "diffusers", pipeline_class.__name__,
                                               *pipeline_class.card_tags, *conditioning] if tag),
        install=INSTALL_NOTE,
        description=pipeline_class.card_description,
        grids=grids,
        classes=(f", conditioned on {num_classes} classes" if num_classes else "") + _class_names(prior, num_classes),
        height=grid_h * factor,
        width=grid_w * factor,
        call=call or ", ".join(filter(None, [pipeline_class.card_snippet_call, f"batch_size={batch_size}", labels])),
        training=training or "Not recorded.",
        evaluation=_evaluation_table(evaluation),
    )
    return write_text_atomically(folder / "README.md", card)


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
