"""`VQPipeline`: what every prior-over-codes pipeline shares — loading by `_class_name`, Hub snapshots, atomic saves,
our model card, and turning sampled codes into images."""

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines import pipeline_loading_utils
from diffusers.utils import BaseOutput

from ..data import image_grid, image_to_tensor
from ..hub import HUB_OPTIONS, resolve_folder, write_pipeline_card
from ..hub import push_to_hub as upload_folder_to_hub
from ..code_levels import sequence_to_codes
from ..models.priors import CodeVocabulary
from ..utils.checks import check_float, check_int
from ..utils.io import atomic_directory, check_safetensors_files, quiet_loading

OUTPUT_TYPES = ("pil", "np", "pt", "codes")
# transformers 5 names its fast tokenizer class TokenizersBackend (PreTrainedTokenizerFast is an alias); the alias is
# what every transformers release loads, so model_index.json records that.
PORTABLE_CLASS_NAMES = {("transformers", "TokenizersBackend"): ["transformers", "PreTrainedTokenizerFast"]}

# diffusers records a component by its library and loads only libraries it knows; registering vq_hub makes
# model_index.json say ["vq_hub", "VQVAEModel"] (stable when files move) and lets Hub downloads accept it (diffusers#6563).
# vq_hub's transformers priors (LlamaGenForCausalLM) load through PreTrainedModel, as transformers' own do.
pipeline_loading_utils.LOADABLE_CLASSES.setdefault(
    "vq_hub",
    {name: ["save_pretrained", "from_pretrained"] for name in ("ModelMixin", "SchedulerMixin", "PreTrainedModel")},
)


@dataclass
class VQPipelineOutput(BaseOutput):
    """
    Output of the vq_hub pipelines.

    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`, *optional*): The decoded images (`None`
            for `output_type="codes"`); arrays and tensors hold values in [0, 1].
        codes (`torch.LongTensor` of shape `(batch_size, h, w)`): The sampled code grids; `(batch_size, depth, h, w)`
            for a residual tokenizer.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor | None = None
    codes: torch.LongTensor | None = None


def register_with_diffusers(pipeline_class: type) -> None:
    """Make `DiffusionPipeline.from_pretrained` resolve `pipeline_class` by name: diffusers looks a folder's
    `_class_name` up with `getattr(diffusers, name)`, so the class is added to that namespace under its own name (no
    diffusers name is ever replaced: vq_hub's names are distinct, which a test checks against a fresh diffusers)."""
    import diffusers

    existing = getattr(diffusers, pipeline_class.__name__, None) if pipeline_class.__name__ in dir(diffusers) else None
    if existing is not None and existing is not pipeline_class:
        raise RuntimeError(f"diffusers already defines {pipeline_class.__name__}: a vq_hub pipeline needs another name")
    setattr(diffusers, pipeline_class.__name__, pipeline_class)


def label_tensor(class_labels) -> torch.Tensor:
    """`class_labels` (an int, a list, an array or a tensor) as a tensor; anything else is a TypeError."""
    try:
        return torch.as_tensor(class_labels)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"`class_labels` must be an int or a 1D list/tensor of ints, got {class_labels!r}") from error


def component_folders(folder: str | os.PathLike) -> list[str]:
    """The component subfolders a saved pipeline's `model_index.json` names (none when there is no such file)."""
    index_file = Path(folder) / "model_index.json"
    if not index_file.is_file():
        return []
    index = json.loads(index_file.read_text())
    return [name for name, value in index.items() if not name.startswith("_") and isinstance(value, list)]


def record_portable_class_names(index_file: Path) -> None:
    """Rewrite `model_index.json` entries that name a class by a release-specific name (`PORTABLE_CLASS_NAMES`)."""
    index = json.loads(index_file.read_text())
    renamed = {name: PORTABLE_CLASS_NAMES.get(tuple(value), value) if isinstance(value, list) else value
               for name, value in index.items()}  # fmt: skip
    if renamed != index:
        index_file.write_text(json.dumps(renamed, indent=2, sort_keys=True) + "\n")


class VQPipeline(DiffusionPipeline):
    r"""
    Base of the pipelines that sample code grids with a prior and decode them with a [`VQVAEModel`] (`vqvae`).

    `VQPipeline.from_pretrained(path_or_repo)` returns the pipeline class named in the folder's `model_index.json`
    (`VQAutoregressivePipeline` or `VQDiscreteDiffusionPipeline`).
    """

    _pipelines: dict[str, type["VQPipeline"]] = {}
    legacy_class_names: tuple[str, ...] = ()  # names older releases wrote into model_index.json
    prior_component = "prior"
    card_snippet_call = ""  # the sampling arguments a model card's snippet shows before batch_size
    card_description = "a prior over discrete image codes"
    card_pipeline_tag = "unconditional-image-generation"  # the Hub's task tag (class-conditional ones share it)
    card_tags: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in (cls.__name__, *cls.__dict__.get("legacy_class_names", ())):
            VQPipeline._pipelines[name] = cls
        register_with_diffusers(cls)

    # ----------------------------------------------------------------------------------------------- loading

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, show_progress: bool = False, **kwargs
    ) -> "VQPipeline":
        """Load a saved pipeline from a folder or a Hub repository (downloaded with `huggingface_hub`, which honours
        `HF_HUB_OFFLINE` and the cache), as the class its `model_index.json` names. Quiet unless `show_progress`
        (diffusers and transformers would each print loading bars)."""
        hub_options = {key: kwargs.pop(key) for key in HUB_OPTIONS if key in kwargs}
        folder = resolve_folder(pretrained_model_name_or_path, **hub_options)
        index_file = folder / "model_index.json"
        if not index_file.is_file():
            raise FileNotFoundError(
                f"`pretrained_model_name_or_path` {str(pretrained_model_name_or_path)!r} holds no model_index.json: "
                "it is not a saved pipeline (a tokenizer alone loads with `VQVAEModel.from_pretrained`)"
            )
        class_name = json.loads(index_file.read_text()).get("_class_name")
        pipeline_class = VQPipeline._pipelines.get(class_name)
        if pipeline_class is None:
            raise ValueError(
                f"model_index.json names {class_name!r}, which is not a vq_hub pipeline "
                f"(known: {sorted(VQPipeline._pipelines)})"
            )
        if not issubclass(pipeline_class, cls):
            raise ValueError(
                f"{str(pretrained_model_name_or_path)!r} holds a {class_name}, not a {cls.__name__}: load it with "
                f"`VQPipeline.from_pretrained` or `{class_name}.from_pretrained`"
            )
        for component in component_folders(folder):
            check_safetensors_files(folder / component)
        with quiet_loading(not show_progress):
            return super(VQPipeline, pipeline_class).from_pretrained(folder, **kwargs)

    # ----------------------------------------------------------------------------------------------- saving

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        safe_serialization: bool = True,
        push_to_hub: bool = False,
        training: str | None = None,
        evaluation: dict | None = None,
        **kwargs,
    ) -> None:
        """Write `model_index.json`, one folder per component and our model card (README.md) into a temporary
        folder, then move them into `save_directory`; `push_to_hub=True` uploads the result (`repo_id`, `token`,
        `private`, `commit_message` as in diffusers)."""
        repo_id = kwargs.pop("repo_id", None) or Path(save_directory).absolute().name
        hub_options = {key: kwargs.pop(key) for key in ("token", "private", "commit_message") if key in kwargs}
        # The components of an older save in this folder go with it (a diffusion pipeline saved over an autoregressive
        # one leaves no stale prior/); other entries (checkpoints, logs) stay.
        replaces = ["model_index.json", *component_folders(save_directory)]
        with atomic_directory(save_directory, replaces=replaces) as staging:
            super().save_pretrained(staging, safe_serialization=safe_serialization, **kwargs)
            record_portable_class_names(staging / "model_index.json")
            write_pipeline_card(staging, repo_id, type(self), training=training, evaluation=evaluation,
                                call=self.card_call())  # fmt: skip
        if push_to_hub:
            upload_folder_to_hub(save_directory, repo_id, **hub_options)

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        training: str | None = None,
        evaluation: dict | None = None,
        **kwargs,
    ) -> str:
        """Save to a temporary folder with our model card and upload it; returns the commit URL."""
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, repo_id=repo_id, training=training, evaluation=evaluation, **kwargs)
            return upload_folder_to_hub(folder, repo_id, token=token, private=bool(private),
                                        commit_message=commit_message or "Upload with vq_hub")  # fmt: skip

    def card_call(self) -> str | None:
        """The arguments of the model card's example call (None: built from the class's card attributes)."""
        return None

    # ----------------------------------------------------------------------------------------------- shared steps

    @property
    def prior_config(self):
        """The config of the transformer over codes (the component named by `prior_component`)."""
        return getattr(self, self.prior_component).config

    @property
    def vocabulary(self) -> CodeVocabulary:
        return CodeVocabulary.from_config(self.prior_config)

    @property
    def code_grid_size(self) -> tuple[int, int]:
        return tuple(self.prior_config.code_grid_size)

    @property
    def code_depth(self) -> int:
        """Codes per position: a residual tokenizer's depth (codes `(B, depth, h, w)`), else 1 (codes `(B, h, w)`)."""
        return int(getattr(self.prior_config, "code_depth", 1))

    @property
    def num_codes(self) -> int:
        """Codes in the prior's sequence: `h·w·depth`."""
        height, width = self.code_grid_size
        return height * width * self.code_depth

    def sequence_to_codes(self, sequence: torch.LongTensor) -> torch.LongTensor:
        """The prior's `(B, h·w·depth)` sequences as the tokenizer's codes `(B, h, w)` / `(B, depth, h, w)`."""
        return sequence_to_codes(sequence, self.code_grid_size, self.code_depth)

    @property
    def resolution(self) -> tuple[int, int]:
        """Image size `(H, W)` the prior's code grid decodes to."""
        factor = self.vqvae.downsample_factor
        return self.code_grid_size[0] * factor, self.code_grid_size[1] * factor

    def encode_images(self, image) -> torch.LongTensor:
        """PIL image(s) or a `(B, C, H, W)` tensor in [-1, 1] → the tokenizer's codes `(B, h, w)` (`(B, depth, h, w)`
        for a residual tokenizer) for this prior."""
        if isinstance(image, PIL.Image.Image):
            image = [image]
        if isinstance(image, (list, tuple)) and all(isinstance(item, PIL.Image.Image) for item in image):
            channels = self.vqvae.config.in_channels  # (H, W): a non-square prior takes its own shape
            image = torch.stack([image_to_tensor(item, self.resolution, channels) for item in image])
        if not isinstance(image, torch.Tensor):
            raise TypeError(f"`image` must be PIL image(s) or a tensor (B, C, H, W) in [-1, 1], got {type(image)}")
        if image.ndim == 3:
            image = image[None]
        if tuple(image.shape[-2:]) != self.resolution:
            raise ValueError(f"`image` must be {self.resolution[0]}×{self.resolution[1]} pixels for this prior, "
                             f"got {tuple(image.shape[-2:])}")  # fmt: skip
        vqvae = self.vqvae
        return vqvae.tokenize(image.to(self._execution_device, vqvae.dtype))

    @staticmethod
    def check_batch_size(batch_size: int | None, known: torch.Tensor | None, class_labels=None) -> int:
        """`batch_size`, or the batch of the known codes / images (`known`), or the number of class labels."""
        if known is not None:
            if known.shape[0] == 0:
                raise ValueError("the images or codes given are an empty batch: give at least one")
            if batch_size is not None and check_int(batch_size, "batch_size", minimum=1) != known.shape[0]:
                raise ValueError(f"`batch_size` {batch_size} does not match the {known.shape[0]} images/codes given")
            return known.shape[0]
        if batch_size is None:
            labels = label_tensor(class_labels) if class_labels is not None else None
            batch_size = labels.numel() if labels is not None and labels.ndim == 1 else 1
        return check_int(batch_size, "batch_size", minimum=1)

    def check_class_labels(self, class_labels, batch_size: int) -> torch.LongTensor | None:
        """`None`, one label for the whole batch, or `batch_size` labels (-1 = unconditional row)."""
        if class_labels is None:
            return None
        labels = label_tensor(class_labels)
        if labels.ndim == 0:
            labels = labels.expand(batch_size)
        if labels.shape != (batch_size,):
            raise ValueError(f"`class_labels` must be one label or {batch_size} labels (batch_size), "
                             f"got shape {tuple(labels.shape)}")  # fmt: skip
        return self.vocabulary.check_class_labels(labels, allow_null=True).to(self._execution_device)

    @staticmethod
    def check_sampling_arguments(guidance_scale, temperature) -> tuple[float, float]:
        """`guidance_scale` (any finite number) and `temperature` (finite, ≥ 0; 0 = greedy) as floats."""
        return check_float(guidance_scale, "guidance_scale"), check_float(temperature, "temperature", minimum=0.0)

    def check_prior_config(self) -> None:
        """A prior built from a stock transformers config lacks vq_hub's code vocabulary: say so when the pipeline
        is built, not as an AttributeError at the first call; nor can a prior of one code per position sample a
        residual tokenizer's codes, or the reverse."""
        prior = getattr(self, self.prior_component, None)
        if prior is not None:
            CodeVocabulary.from_config(prior.config)
            vqvae = getattr(self, "vqvae", None)
            depth = getattr(vqvae, "code_depth", None) if vqvae is not None else None
            if isinstance(depth, int) and depth != self.code_depth:
                raise ValueError(f"the prior models {self.code_depth} code(s) per position (config `code_depth`), "
                                 f"but the tokenizer gives {depth}: build its config from this tokenizer")  # fmt: skip

    @staticmethod
    def check_output_type(output_type: str) -> None:
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}")

    def decode_codes(self, codes: torch.LongTensor, output_type: str = "pil"):
        """Code grids `(B, h, w)` (`(B, depth, h, w)`) → images of `output_type` ("pil", "np", "pt"; arrays in
        [0, 1])."""
        with torch.no_grad():
            images = self.vqvae.detokenize(codes)
        return self.postprocess(images.float().clamp(-1, 1), output_type)

    def postprocess(self, images: torch.Tensor, output_type: str = "pil"):
        """Images in [-1, 1] → "pil" / "np" / "pt" (arrays in [0, 1]), with diffusers' image processor."""
        processor = VaeImageProcessor(vae_scale_factor=self.vqvae.downsample_factor, do_normalize=True)
        return processor.postprocess(images, output_type=output_type)

    @property
    def class_names(self) -> list[str] | None:
        """A name per class, as the prior's config records them (transformers' `id2label`), or None when it records
        none (transformers' default `LABEL_i`) or not one per class."""
        num_classes = self.vocabulary.num_classes
        id2label = getattr(getattr(self, self.prior_component).config, "id2label", None) or {}
        names = [id2label.get(i, id2label.get(str(i))) for i in range(num_classes)]
        if not num_classes or any(name is None or name == f"LABEL_{i}" for i, name in enumerate(names)):
            return None
        return [str(name) for name in names]

    def sample_grid(self, images_per_row: int = 8, class_labels: list[int] | None = None, **call_kwargs):
        """One picture: a row of `images_per_row` samples per class in `class_labels` (every class of a
        class-conditional prior by default; one unconditional row otherwise). `call_kwargs` go to the call."""
        num_classes = self.vocabulary.num_classes
        if class_labels is None:
            class_labels = list(range(num_classes)) if num_classes else [None]
        rows = []
        for label in class_labels:
            labels = None if label is None else [label] * images_per_row
            images = self(batch_size=images_per_row, class_labels=labels, output_type="pt", **call_kwargs).images
            rows.append(images * 2 - 1)
        return image_grid(rows)

    def make_output(self, codes: torch.LongTensor, output_type: str, return_dict: bool):
        images = None if output_type == "codes" else self.decode_codes(codes, output_type)
        self.maybe_free_model_hooks()
        output = VQPipelineOutput(images=images, codes=codes)
        return output if return_dict else output.to_tuple()
