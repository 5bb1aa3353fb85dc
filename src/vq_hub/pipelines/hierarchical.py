"""`VQHierarchicalPipeline`: VQ-VAE-2 sampling — a class-conditional prior samples the top codes, a second prior
samples the bottom codes seeing the top ones as a prefix, the two-level tokenizer decodes both."""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from ..code_levels import as_levels, code_grid_sizes
from ..models.hierarchical_vq_model import HierarchicalVQModel
from ..models.priors import CodeVocabulary
from ..schedulers import DiscreteDiffusionScheduler
from ..utils.checks import check_float, check_generator, check_int
from .autoregressive import VQAutoregressivePipeline
from .discrete_diffusion import VQDiscreteDiffusionPipeline
from .pipeline_vq import VQPipeline, VQPipelineOutput


@dataclass
class VQHierarchicalPipelineOutput(VQPipelineOutput):
    """
    Output of [`VQHierarchicalPipeline`].

    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`, *optional*): The decoded images (`None` for
            `output_type="codes"`).
        codes (`tuple[torch.LongTensor, torch.LongTensor]`): `(top codes (B, h_top, w_top), bottom codes
            (B, h_bottom, w_bottom))`, as `HierarchicalVQModel.tokenize` returns them (the bottom is `None` for a
            pipeline without a bottom prior).
    """

    codes: tuple[torch.LongTensor, torch.LongTensor | None] | None = None


class VQHierarchicalPipeline(VQPipeline):
    r"""
    Sample images with two priors over the codes of a [`HierarchicalVQModel`] (VQ-VAE-2): the top first, then the
    bottom given the top.

    Components:
        vqvae ([`HierarchicalVQModel`]): Decodes `(top, bottom)` code grids to images (and encodes images for
            completion).
        top_prior ([`~transformers.PreTrainedModel`]): A class-conditional causal LM over the top codes
            (`autoregressive_prior_config(vqvae, num_classes, level="top")`).
        bottom_prior ([`~transformers.PreTrainedModel`], *optional*): A prior over the bottom codes that sees the
            top codes as a prefix from a second vocabulary (`level="bottom"`): a causal LM, or a masked-LM denoiser
            with the `scheduler`. Without it the pipeline samples top codes and decodes them alone
            (`HierarchicalVQModel.detokenize_top`), as the top prior's training grids do.
        scheduler ([`DiscreteDiffusionScheduler`], *optional*): Only with a denoiser as the bottom prior.

    Each stage runs the sampling loop of the single-level pipeline of its prior's kind
    ([`VQAutoregressivePipeline.sample_codes`], [`VQDiscreteDiffusionPipeline.denoise`]).
    """

    model_cpu_offload_seq = "top_prior->bottom_prior->vqvae"
    _optional_components = ["bottom_prior", "scheduler"]
    prior_component = "top_prior"
    card_description = "a VQ-VAE-2 sampler: a prior over the top codes, then one over the bottom codes given the top"

    def __init__(
        self,
        vqvae: HierarchicalVQModel,
        top_prior: PreTrainedModel,
        bottom_prior: PreTrainedModel | None = None,
        scheduler: DiscreteDiffusionScheduler | None = None,
    ):
        super().__init__()
        self.register_modules(vqvae=vqvae, top_prior=top_prior, bottom_prior=bottom_prior, scheduler=scheduler)
        self.check_components()

    # ----------------------------------------------------------------------------------------------- components

    def check_components(self) -> None:
        """The priors' vocabularies must fit the tokenizer's levels, the bottom prior's prefix must be the top grid,
        and a denoiser needs the scheduler: said when the pipeline is built, not at the first call."""
        if not isinstance(self.vqvae, HierarchicalVQModel):
            raise TypeError(f"`vqvae` must be a HierarchicalVQModel, got {type(self.vqvae).__name__}")
        top_grid, bottom_grid = code_grid_sizes(self.vqvae)
        top_size, bottom_size = self.vqvae.codebook_sizes
        top = CodeVocabulary.from_config(self.top_prior.config)
        if top.codebook_size != top_size or top.prefix_length:
            raise ValueError(f"`top_prior` must model the {top_size} top codes without a prefix (build it with "
                             "autoregressive_prior_config(vqvae, …, level='top'))")  # fmt: skip
        if self.bottom_prior is None:
            if self.scheduler is not None:
                raise ValueError("a `scheduler` was given without a `bottom_prior` to denoise with")
            return
        bottom = self.bottom_vocabulary
        expected = (bottom_size, top_size, top_grid[0] * top_grid[1], top.num_classes)
        if (bottom.codebook_size, bottom.prefix_vocab_size, bottom.prefix_length, bottom.num_classes) != expected:
            raise ValueError(
                f"`bottom_prior` must model the {bottom_size} bottom codes after a prefix of the {top_grid[0]}×"
                f"{top_grid[1]} top codes ({top_size} ids) with the top prior's {top.num_classes} classes; its "
                f"vocabulary is {bottom} (build it with autoregressive_prior_config / denoiser_config(vqvae, …, "
                "level='bottom'))"
            )
        if tuple(self.bottom_prior.config.code_grid_size) != tuple(bottom_grid):
            raise ValueError(f"`bottom_prior` samples {self.bottom_prior.config.code_grid_size} grids, the tokenizer's "
                             f"bottom grid is {list(bottom_grid)}")  # fmt: skip
        if bottom.with_mask_token and self.scheduler is None:
            raise ValueError("`bottom_prior` is a denoiser (its vocabulary has a mask token): give the `scheduler`")
        if not bottom.with_mask_token and self.scheduler is not None:
            raise ValueError("`scheduler` applies to a denoiser; this `bottom_prior` is autoregressive")

    @property
    def bottom_vocabulary(self) -> CodeVocabulary:
        return CodeVocabulary.from_config(self.bottom_prior.config)

    @property
    def bottom_is_denoiser(self) -> bool:
        return self.bottom_prior is not None and self.bottom_vocabulary.with_mask_token

    @property
    def resolution(self) -> tuple[int, int]:
        """Image size `(H, W)` of the top prior's grid."""
        factor = self.vqvae.top_downsample_factor
        return self.code_grid_size[0] * factor, self.code_grid_size[1] * factor

    def _stage(self, prior: PreTrainedModel) -> VQAutoregressivePipeline | VQDiscreteDiffusionPipeline:
        """The single-level pipeline whose sampling loop serves `prior` (sharing the modules, no progress bar)."""
        if CodeVocabulary.from_config(prior.config).with_mask_token:
            stage = VQDiscreteDiffusionPipeline(vqvae=self.vqvae, denoiser=prior, scheduler=self.scheduler)
        else:
            stage = VQAutoregressivePipeline(vqvae=self.vqvae, prior=prior)
        stage.set_progress_bar_config(disable=True)
        return stage

    # ----------------------------------------------------------------------------------------------- sampling

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int | None = None,
        class_labels: int | list[int] | torch.Tensor | None = None,
        guidance_scale: float = 1.0,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        num_steps: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        top_codes: torch.LongTensor | None = None,
        image=None,
        mask=None,
        codes: tuple[torch.LongTensor, torch.LongTensor] | None = None,
        keep_mask: torch.BoolTensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        num_inference_steps: int | None = None,
    ) -> VQHierarchicalPipelineOutput | tuple:
        r"""
        Sample the top codes, then the bottom codes given them, and decode both.

        Args:
            batch_size (`int`, *optional*): Images to sample (default: the number of codes, images or labels given).
            class_labels, guidance_scale, temperature, generator: As in [`VQAutoregressivePipeline`], for both stages
                (guidance contrasts each stage's class with the null class; the bottom always sees the top).
            top_k, top_p (*optional*): For autoregressive stages.
            num_steps (`int`, *optional*): Denoising steps of a denoiser bottom prior (`num_inference_steps` is an
                alias); refused with an autoregressive one.
            top_codes (`torch.LongTensor` `(B, h_top, w_top)`, *optional*): Keep these top codes; only the bottom is
                sampled.
            image (PIL image(s) or `torch.Tensor` in [-1, 1], *optional*) and mask (`(H, W)` / `(B, 1, H, W)`,
                1 = regenerate): Inpaint at the bottom level given the top: the image's top codes are all kept, a
                bottom code is regenerated where any pixel of its cell is masked. An autoregressive bottom prior
                completes a raster order: the mask must cover whole trailing cells (e.g. the lower rows).
            codes (`(top, bottom)`) and keep_mask (`torch.BoolTensor` `(B, h_bottom, w_bottom)` or
                `(h_bottom, w_bottom)`, True = keep), *optional*: The same in code space.
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"`, `"pt"` or `"codes"` (both grids, no decoding).
            return_dict (`bool`, defaults to `True`): Return a [`VQHierarchicalPipelineOutput`] rather than a tuple.
            callback_on_step_end (`Callable`, *optional*): Called as `callback(pipe, step, position or timestep,
                {"stage": "top" | "bottom", "codes": that stage's codes so far})` after every step of either stage.

        Returns:
            [`VQHierarchicalPipelineOutput`] with `images` and `codes` = `(top, bottom)`.
        """
        self.check_output_type(output_type)
        guidance_scale, temperature = self.check_sampling_arguments(guidance_scale, temperature)
        num_steps = self.check_num_steps(num_steps, num_inference_steps)
        top_k = None if top_k is None else check_int(top_k, "top_k", minimum=1)
        top_p = None if top_p is None else check_float(top_p, "top_p", minimum=0.0, maximum=1.0, exclusive_minimum=True)
        known_top, known_bottom, keep = self.prepare_known_codes(top_codes, image, mask, codes, keep_mask)
        batch_size = self.check_batch_size(batch_size, known_top, class_labels)
        labels = self.check_class_labels(class_labels, batch_size)
        generator = check_generator(generator, batch_size)
        guided = labels is not None and guidance_scale != 1.0
        options = dict(guidance_scale=guidance_scale, temperature=temperature, generator=generator)

        top_stage = self._stage(self.top_prior)
        bottom_stage = self._stage(self.bottom_prior) if self.bottom_prior is not None else None
        total = 0 if known_top is not None else _num_codes(self.top_prior)
        if bottom_stage is not None:
            known = 0 if known_bottom is None or self.bottom_is_denoiser else int(keep[0].sum())
            total += num_steps if self.bottom_is_denoiser else _num_codes(self.bottom_prior) - known
        with self.progress_bar(total=total) as progress:

            def stage_callback(stage: str):
                def callback(pipe, step, position, values):
                    progress.update()
                    if callback_on_step_end is not None:
                        callback_on_step_end(self, step, position, {"stage": stage, "codes": values["codes"]})

                return callback

            top = known_top
            if top is None:
                start = self.start_tokens(self.vocabulary, labels, batch_size, guided)
                top = top_stage.sample_codes(*start, batch_size, guided, top_k=top_k, top_p=top_p,
                                             callback_on_step_end=stage_callback("top"), **options)  # fmt: skip
            bottom = None
            if bottom_stage is not None:
                start = self.start_tokens(self.bottom_vocabulary, labels, batch_size, guided, prefix=top.flatten(1))
                if self.bottom_is_denoiser:
                    bottom = bottom_stage.denoise(*start, batch_size, guided, num_steps, known=known_bottom, keep=keep,
                                                  output_type="codes", callback_on_step_end=stage_callback("bottom"),
                                                  **options).codes  # fmt: skip
                else:
                    prefix = None if known_bottom is None else self.raster_prefix(known_bottom, keep)
                    bottom = bottom_stage.sample_codes(*start, batch_size, guided, top_k=top_k, top_p=top_p,
                                                       known_codes=prefix, callback_on_step_end=stage_callback("bottom"),
                                                       **options)  # fmt: skip

        images = None
        if output_type != "codes":
            with torch.no_grad():
                decoded = self.vqvae.detokenize_top(top) if bottom is None else self.vqvae.detokenize((top, bottom))
            images = self.postprocess(decoded.float().clamp(-1, 1), output_type)
        self.maybe_free_model_hooks()
        output = VQHierarchicalPipelineOutput(images=images, codes=(top, bottom))
        return output if return_dict else output.to_tuple()

    def start_tokens(self, vocabulary: CodeVocabulary, labels, batch_size: int, guided: bool, prefix=None):
        """`(tokens, attention mask)` before a stage's first code — `[prefix, condition token]` — with the
        unconditional (null class) rows below the conditional ones when guided; the prefix is in both."""
        conditions = vocabulary.condition_tokens(labels, batch_size, self._execution_device)
        if guided:
            conditions = torch.cat([conditions, torch.full_like(conditions, vocabulary.null_class_token_id)])
            prefix = None if prefix is None else torch.cat([prefix, prefix])
        return vocabulary.start_tokens(conditions, prefix)

    # ----------------------------------------------------------------------------------------------- inputs

    def check_num_steps(self, num_steps, num_inference_steps) -> int | None:
        if num_steps is None and num_inference_steps is None:
            return self._stage(self.bottom_prior).resolve_num_steps(None, None) if self.bottom_is_denoiser else None
        if not self.bottom_is_denoiser:
            raise TypeError("`num_steps` applies to a denoiser bottom prior; this pipeline's bottom prior is "
                            f"{'missing' if self.bottom_prior is None else 'autoregressive'}")  # fmt: skip
        return self._stage(self.bottom_prior).resolve_num_steps(num_steps, num_inference_steps)

    def prepare_known_codes(self, top_codes, image, mask, codes, keep_mask):
        """`(top (B, h, w) or None, bottom (B, n) or None, keep (B or 1, n) or None)` from the given codes/images."""
        given = [
            name for name, value in (("top_codes", top_codes), ("image", image), ("codes", codes)) if value is not None
        ]
        if len(given) > 1:
            raise ValueError(
                f"give at most one of `top_codes`, `image` (+ `mask`), `codes` (+ `keep_mask`); got {given}"
            )
        if mask is not None and image is None or keep_mask is not None and codes is None:
            raise ValueError("`mask` / `keep_mask` need the `image` / `codes` to keep parts of")
        (top_height, top_width), (height, width) = self.code_grid_size, tuple(self.bottom_grid_size)
        if top_codes is not None:
            top = self.vocabulary.check_codes(torch.as_tensor(top_codes), "top_codes").to(self._execution_device)
            if top.ndim != 3 or tuple(top.shape[1:]) != (top_height, top_width):
                raise ValueError(f"`top_codes` must be (B, {top_height}, {top_width}), got shape {tuple(top.shape)}")
            return top, None, None
        if image is None and codes is None:
            return None, None, None
        if self.bottom_prior is None:
            raise ValueError("completing images needs a `bottom_prior`: this pipeline samples top codes only")
        if image is not None:
            if mask is None:
                raise ValueError("`image` needs a `mask` (1 = regenerate) for inpainting at the bottom level")
            top, bottom = self.encode_images(image)
            keep = ~self.mask_to_cells(mask, top.shape[0])
        else:
            if keep_mask is None:
                raise ValueError("`codes` needs a `keep_mask` (True = keep) over the bottom grid")
            top, bottom = self.vqvae.check_code_levels(as_levels(codes))
            top = self.vocabulary.check_codes(top, "codes[0]").to(self._execution_device)
            bottom = self.bottom_vocabulary.check_codes(bottom, "codes[1]").to(self._execution_device)
            if tuple(top.shape[1:]) != (top_height, top_width):
                raise ValueError(f"`codes` must be grids of {top_height}×{top_width} (top) and {height}×{width} "
                                 f"(bottom), got {tuple(top.shape)} and {tuple(bottom.shape)}")  # fmt: skip
            keep = torch.as_tensor(keep_mask, device=bottom.device)
            if keep.dtype != torch.bool:
                raise ValueError(f"`keep_mask` must be a bool tensor (True = keep), got {keep.dtype}")
            keep = keep[None] if keep.ndim == 2 else keep
            if keep.ndim != 3 or tuple(keep.shape[1:]) != (height, width) or keep.shape[0] not in (1, bottom.shape[0]):
                raise ValueError(f"`keep_mask` must be ({height}, {width}) or (B, {height}, {width}), got shape "
                                 f"{tuple(keep.shape)}")  # fmt: skip
        return top, bottom.flatten(1), keep.flatten(1)

    @property
    def bottom_grid_size(self) -> tuple[int, int]:
        return tuple(code_grid_sizes(self.vqvae)[1])

    def mask_to_cells(self, mask, batch_size: int) -> torch.BoolTensor:
        """A pixel mask (1 = regenerate) → `(B, h_bottom, w_bottom)` bottom cells to regenerate (any masked pixel in
        the cell): the diffusion pipeline's rule, which needs only `resolution` and the tokenizer's pixels per code."""
        return VQDiscreteDiffusionPipeline.mask_to_cells(self, mask, batch_size)

    @staticmethod
    def raster_prefix(known: torch.LongTensor, keep: torch.BoolTensor) -> torch.LongTensor:
        """The kept codes of an autoregressive completion: `keep` must be a raster prefix, the same for every row."""
        keep = keep.expand(known.shape[0], -1)
        length = int(keep[0].sum())
        if not bool((keep == (torch.arange(keep.shape[1], device=keep.device) < length)).all()):
            raise ValueError("an autoregressive bottom prior completes the bottom codes in raster order: the kept "
                             "cells must be the first ones (whole top rows, then the start of the next) and the same "
                             "in every image; inpaint arbitrary regions with a denoiser bottom prior")  # fmt: skip
        return known[:, :length]

    def decode_codes(self, codes, output_type: str = "pil"):
        """`(top, bottom)` code grids → images of `output_type` (the bottom may be None: a top-only decode)."""
        top, bottom = codes
        with torch.no_grad():
            images = self.vqvae.detokenize_top(top) if bottom is None else self.vqvae.detokenize((top, bottom))
        return self.postprocess(images.float().clamp(-1, 1), output_type)


def _num_codes(prior: PreTrainedModel) -> int:
    height, width = prior.config.code_grid_size
    return height * width
