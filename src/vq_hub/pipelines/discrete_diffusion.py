"""`VQDiscreteDiffusionPipeline`: a bidirectional transformer denoises a whole code grid over a few steps, the tokenizer
decodes it."""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from ..code_levels import cells_to_sequence, codes_to_sequence
from ..models.cross_attention import bidirectional_attention_mask
from ..models.vq_model import VQVAEModel
from ..schedulers import DiscreteDiffusionScheduler
from ..utils.checks import check_generator, check_int
from .pipeline_vq import VQPipeline, VQPipelineOutput

DEFAULT_NUM_STEPS = 50


@dataclass
class VQDiscreteDiffusionPipelineOutput(VQPipelineOutput):
    """
    Output of [`VQDiscreteDiffusionPipeline`]: `images` and `codes` as [`VQPipelineOutput`], and

    Args:
        intermediates (`list`, *optional*): With `return_intermediates=True`, the decoded grid after every step (in
            `output_type`; still-masked cells painted grey), for pictures of the reverse process
            (`vq_hub.data.save_gif`).
    """

    intermediates: list | None = None


class VQDiscreteDiffusionPipeline(VQPipeline):
    r"""
    Sample images with a discrete-diffusion prior over codes (uniform noise or MaskGIT-style masking).

    Components:
        vqvae ([`VQVAEModel`]): Decodes code grids to images (and encodes images for inpainting).
        denoiser ([`~transformers.PreTrainedModel`]): A bidirectional masked-LM (`BertForMaskedLM` by default) over
            the vocabulary of [`~vq_hub.models.priors.CodeVocabulary`] with a mask token, predicting the clean codes.
        scheduler ([`DiscreteDiffusionScheduler`]): The corruption and the reverse step.
    """

    legacy_class_names = ("VQDiffusionPipeline",)  # vq_hub 0.1, renamed: it collided with diffusers' own
    model_cpu_offload_seq = "denoiser->vqvae"
    prior_component = "denoiser"
    card_snippet_call = "num_steps=50"
    card_description = "a discrete-diffusion transformer that denoises whole grids of image codes"
    card_tags = ("discrete-diffusion", "image-tokens")

    def __init__(self, vqvae: VQVAEModel, denoiser: PreTrainedModel, scheduler: DiscreteDiffusionScheduler):
        super().__init__()
        self.register_modules(vqvae=vqvae, denoiser=denoiser, scheduler=scheduler)
        self.check_prior_config()

    @torch.no_grad()
    def __call__(
        self,
        num_steps: int | None = None,
        batch_size: int | None = None,
        class_labels: int | list[int] | torch.Tensor | None = None,
        guidance_scale: float = 1.0,
        temperature: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        image=None,
        mask=None,
        codes: torch.LongTensor | None = None,
        keep_mask: torch.BoolTensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        return_intermediates: bool = False,
        num_inference_steps: int | None = None,
    ) -> VQDiscreteDiffusionPipelineOutput | tuple:
        r"""
        Denoise code grids from full corruption in `num_steps` steps and decode them.

        Args:
            num_steps (`int`, *optional*): Denoising steps, from 1 to the scheduler's `num_train_timesteps`
                (default 50, or fewer when the scheduler has fewer). `num_inference_steps` is an alias.
            batch_size (`int`, *optional*): Images to sample (default: the number of images / codes / labels given).
            class_labels, guidance_scale: As in [`VQAutoregressivePipeline`]: one label or one per image (-1 =
                unconditional), and classifier-free guidance on the logits with both rows in one batch.
            temperature (`float`, defaults to 1.0): Sampling temperature (0 = argmax); for masking also the scale of
                the confidence noise, annealed to zero over the steps.
            generator (`torch.Generator` or a list, one per image, *optional*): For reproducible sampling; with one
                generator per image, each image's noise comes from its own generator.
            image (PIL image(s) or `torch.Tensor` in [-1, 1], *optional*) and mask (PIL image(s) or tensor
                `(B, 1, H, W)` / `(H, W)`, 1 = regenerate): Inpainting; a code is regenerated when any pixel of its
                cell is masked, every other code is kept exactly.
            codes (`torch.LongTensor` `(B, h, w)`) and keep_mask (`torch.BoolTensor` `(B, h, w)` or `(h, w)`, True =
                keep), *optional*: The same in code space. A residual tokenizer's codes are `(B, depth, h, w)`, its
                `keep_mask` still one per cell (all depths of a cell are kept or regenerated).
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"`, `"pt"` or `"codes"`.
            return_dict (`bool`, defaults to `True`): Return a [`VQDiscreteDiffusionPipelineOutput`] rather than a tuple.
            callback_on_step_end (`Callable`, *optional*): Called as `callback(pipe, step, timestep,
                {"codes": codes (B, h, w) after the step, "pred_original_sample": the predicted clean codes})`.
            return_intermediates (`bool`): Also return the decoded images after every step.
        """
        num_steps = self.resolve_num_steps(num_steps, num_inference_steps)
        self.check_output_type(output_type)
        guidance_scale, temperature = self.check_sampling_arguments(guidance_scale, temperature)

        device = self._execution_device
        known, keep = self.prepare_known_codes(image, mask, codes, keep_mask)
        batch_size = self.check_batch_size(batch_size, known, class_labels)
        labels = self.check_class_labels(class_labels, batch_size)
        generator = check_generator(generator, batch_size)
        vocabulary = self.vocabulary
        conditions = vocabulary.condition_tokens(labels, batch_size, device)
        guided = labels is not None and guidance_scale != 1.0
        if guided:
            conditions = torch.cat([conditions, torch.full_like(conditions, vocabulary.null_class_token_id)])
        start_tokens, start_mask = vocabulary.start_tokens(conditions)
        return self.denoise(start_tokens, start_mask, batch_size, guided, num_steps, guidance_scale, temperature,
                            generator, known, keep, output_type, return_dict, callback_on_step_end,
                            return_intermediates)  # fmt: skip

    def resolve_num_steps(self, num_steps: int | None, num_inference_steps: int | None) -> int:
        """`num_steps` or its diffusers alias `num_inference_steps` (default 50, or fewer when the scheduler has
        fewer timesteps); the scheduler checks the range."""
        if num_steps is not None and num_inference_steps is not None and num_steps != num_inference_steps:
            raise ValueError(f"`num_steps` ({num_steps}) and its alias `num_inference_steps` "
                             f"({num_inference_steps}) disagree: give one")  # fmt: skip
        num_steps = num_steps if num_steps is not None else num_inference_steps
        if num_steps is None:
            num_steps = min(DEFAULT_NUM_STEPS, self.scheduler.config.num_train_timesteps)
        return check_int(num_steps, "num_steps")

    def denoise(
        self,
        start_tokens: torch.LongTensor,
        start_mask: torch.LongTensor,
        batch_size: int,
        guided: bool,
        num_steps: int,
        guidance_scale: float = 1.0,
        temperature: float = 1.0,
        generator=None,
        known: torch.LongTensor | None = None,
        keep: torch.BoolTensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        return_intermediates: bool = False,
        prior_inputs: dict | None = None,
    ) -> VQDiscreteDiffusionPipelineOutput | tuple:
        """The denoising loop every diffusion pipeline shares: `start_tokens` `(B, S)` (or `(2B, S)` with the
        unconditional rows below the conditional ones when `guided`) are what the denoiser sees before the grid —
        the prefix and the condition token — with their attention mask `start_mask`; `known` / `keep` `(B, n)`
        inpaint; `prior_inputs` go to every call of the denoiser (a text encoder's states, one row per row of
        `start_tokens`)."""
        device = start_tokens.device
        if keep is not None and keep.shape[0] == 1 and batch_size > 1:
            keep = keep.expand(batch_size, -1)
        self.scheduler.set_timesteps(num_steps, device=device)
        sample = self.scheduler.initial_codes((batch_size, self.num_codes), known, keep, generator, device)
        intermediates = [] if return_intermediates else None
        for step, timestep in enumerate(self.progress_bar(self.scheduler.timesteps)):
            rows = torch.cat([sample, sample]) if guided else sample
            logits = self.code_logits(start_tokens, start_mask, rows, **(prior_inputs or {}))
            if guided:
                conditional, unconditional = logits.chunk(2)
                logits = unconditional + guidance_scale * (conditional - unconditional)
            output = self.scheduler.step(logits, timestep, sample, generator=generator, temperature=temperature,
                                         keep_mask=keep)  # fmt: skip
            sample = output.prev_sample
            if intermediates is not None:
                intermediates.append(self.picture_of(sample, output.pred_original_sample, output_type))
            if callback_on_step_end is not None:
                callback_on_step_end(self, step, timestep, {
                    "codes": self.sequence_to_codes(sample),
                    "pred_original_sample": self.sequence_to_codes(output.pred_original_sample),
                })  # fmt: skip

        grids = self.sequence_to_codes(sample)
        images = None if output_type == "codes" else self.decode_codes(grids, output_type)
        self.maybe_free_model_hooks()
        result = VQDiscreteDiffusionPipelineOutput(images=images, codes=grids, intermediates=intermediates)
        return result if return_dict else result.to_tuple()

    def code_logits(
        self, start_tokens: torch.LongTensor, start_mask: torch.LongTensor, codes: torch.LongTensor, **prior_inputs
    ) -> torch.Tensor:
        """The denoiser's float32 logits over the K codes at every grid position `(B, n, K)`, seeing `start_tokens`
        (prefix and condition token, attention mask `start_mask`) before the grid, and `prior_inputs` (a text
        encoder's states for a cross-attention denoiser, whose self-attention stays bidirectional)."""
        tokens = torch.cat([start_tokens, codes], dim=1)
        attention_mask = torch.cat([start_mask, torch.ones_like(codes)], dim=1)
        attention_mask = bidirectional_attention_mask(attention_mask, self.denoiser.config)
        logits = self.denoiser(input_ids=tokens, attention_mask=attention_mask, **prior_inputs).logits
        return logits[:, start_tokens.shape[1] :, : self.vocabulary.codebook_size].float()

    def picture_of(self, sample: torch.LongTensor, predicted: torch.LongTensor, output_type: str):
        """The grid after a step as images: still-masked cells grey, the rest decoded (a jigsaw assembling)."""
        masked = sample >= self.vocabulary.codebook_size
        codes = self.sequence_to_codes(torch.where(masked, predicted, sample))
        images = self.vqvae.detokenize(codes).float().clamp(-1, 1)
        factor = self.vqvae.downsample_factor
        cells = self.sequence_to_codes(masked)
        cells = cells[:, None] if self.code_depth == 1 else cells.any(dim=1, keepdim=True)  # any depth still masked
        cells = cells.repeat_interleave(factor, 2).repeat_interleave(factor, 3)
        images = torch.where(cells, torch.zeros_like(images), images)
        return self.postprocess(images, "pil" if output_type == "codes" else output_type)

    def prepare_known_codes(
        self, image, mask, codes, keep_mask
    ) -> tuple[torch.LongTensor | None, torch.BoolTensor | None]:
        """`(known codes (B, n), keep (B or 1, n))` for inpainting, or `(None, None)`; a residual tokenizer's cells
        are kept or regenerated with all their depths."""
        height, width = self.code_grid_size
        depth = self.code_depth
        grid = (height, width) if depth == 1 else (depth, height, width)
        if image is not None and codes is not None:
            raise ValueError("give `image` + `mask` or `codes` + `keep_mask`, not both")
        if image is None and codes is None:
            if mask is not None or keep_mask is not None:
                raise ValueError("`mask` / `keep_mask` need the `image` / `codes` to keep parts of")
            return None, None
        if image is not None:
            if mask is None:
                raise ValueError("`image` needs a `mask` (1 = regenerate) for inpainting")
            known = self.encode_images(image)
            keep = ~self.mask_to_cells(mask, known.shape[0])
        else:
            if keep_mask is None:
                raise ValueError("`codes` needs a `keep_mask` (True = keep) for inpainting")
            known = self.vocabulary.check_codes(torch.as_tensor(codes), "codes").to(self._execution_device)
            if known.ndim != len(grid) + 1 or tuple(known.shape[1:]) != grid:
                raise ValueError(f"`codes` must be (B, {', '.join(map(str, grid))}), got shape {tuple(known.shape)}")
            keep = torch.as_tensor(keep_mask, device=known.device)
            if keep.dtype != torch.bool:
                raise ValueError(f"`keep_mask` must be a bool tensor (True = keep), got {keep.dtype}")
            if keep.ndim == 2:
                keep = keep[None]
            if keep.ndim != 3 or tuple(keep.shape[1:]) != (height, width) or keep.shape[0] not in (1, known.shape[0]):
                raise ValueError(f"`keep_mask` must be ({height}, {width}) or (B, {height}, {width}) like `codes` "
                                 f"{tuple(known.shape)}, got shape {tuple(keep.shape)}")  # fmt: skip
        return codes_to_sequence(known), cells_to_sequence(keep, depth)

    def mask_to_cells(self, mask, batch_size: int) -> torch.BoolTensor:
        """A pixel mask (1 = regenerate) → `(B, h, w)` code cells to regenerate (any masked pixel in the cell)."""
        if isinstance(mask, PIL.Image.Image):
            mask = [mask]
        if isinstance(mask, (list, tuple)):
            mask = torch.stack([torch.from_numpy(np.asarray(m.convert("L"), dtype=np.float32) / 255) for m in mask])
            mask = mask[:, None]
        mask = torch.as_tensor(mask, dtype=torch.float32, device=self._execution_device)
        if mask.ndim == 2:
            mask = mask[None, None]
        resolution = self.resolution
        if mask.ndim != 4 or mask.shape[1] != 1 or tuple(mask.shape[-2:]) != resolution or \
                mask.shape[0] not in (1, batch_size):  # fmt: skip
            raise ValueError(f"`mask` must be (H, W) or (B, 1, H, W) with H×W = {resolution[0]}×{resolution[1]} "
                             f"and B = 1 or {batch_size}, got shape {tuple(mask.shape)}")  # fmt: skip
        cells = F.max_pool2d(mask, self.vqvae.downsample_factor) > 0.5
        return cells[:, 0].expand(batch_size, -1, -1)
