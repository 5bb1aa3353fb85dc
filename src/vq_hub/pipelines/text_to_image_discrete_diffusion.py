"""`VQDiscreteDiffusionTextToImagePipeline`: MUSE style — a bidirectional denoiser attends to the prompt's tokens
(a prefix before the grid) and unmasks a whole code grid over a few steps."""

from collections.abc import Callable

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..models.vq_model import VQVAEModel
from ..schedulers import DiscreteDiffusionScheduler
from ..utils.checks import check_generator
from .discrete_diffusion import VQDiscreteDiffusionPipeline, VQDiscreteDiffusionPipelineOutput
from .text_conditioning import TextConditioningMixin


class VQDiscreteDiffusionTextToImagePipeline(TextConditioningMixin, VQDiscreteDiffusionPipeline):
    r"""
    Text-to-image with a discrete-diffusion prior over codes (MUSE style, the text as prefix tokens).

    Components:
        vqvae ([`VQVAEModel`]): Decodes code grids to images.
        tokenizer ([`~transformers.PreTrainedTokenizerFast`]): Turns prompts into the denoiser's prefix ids.
        denoiser ([`~transformers.PreTrainedModel`]): A bidirectional masked LM (`BertForMaskedLM` by default) over
            `[text tokens, BOS, x_t]`, its config built by `denoiser_config(…, prefix_vocab_size=len(tokenizer),
            prefix_length=…)`; it predicts the clean codes at every grid position.
        scheduler ([`DiscreteDiffusionScheduler`]): The corruption and the reverse step.
    """

    model_cpu_offload_seq = "denoiser->vqvae"
    card_description = "a MUSE-style discrete-diffusion transformer that denoises code grids attending to the prompt"

    def __init__(
        self,
        vqvae: VQVAEModel,
        tokenizer: PreTrainedTokenizerBase,
        denoiser: PreTrainedModel,
        scheduler: DiscreteDiffusionScheduler,
    ):
        super().__init__(vqvae=vqvae, denoiser=denoiser, scheduler=scheduler)
        self.register_modules(tokenizer=tokenizer)
        self.check_tokenizer()

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        num_steps: int | None = None,
        guidance_scale: float = 3.0,
        temperature: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        return_intermediates: bool = False,
        num_inference_steps: int | None = None,
    ) -> VQDiscreteDiffusionPipelineOutput | tuple:
        r"""
        Denoise the code grids of `prompt` from full corruption in `num_steps` steps and decode them.

        Args:
            prompt (`str` or `list[str]`): What to draw; `""` samples unconditionally.
            negative_prompt (`str` or `list[str]`, *optional*): Guide away from this (one, or one per prompt)
                instead of from the empty prompt. Used only with guidance (`guidance_scale` ≠ 1).
            num_images_per_prompt (`int`, defaults to 1): Images per prompt; the batch is prompts × this.
            num_steps (`int`, *optional*): Denoising steps, from 1 to the scheduler's `num_train_timesteps` (default
                50, or fewer when the scheduler has fewer). `num_inference_steps` is an alias.
            guidance_scale (`float`, defaults to 3.0): Classifier-free guidance on the logits, the prompt rows and
                the empty/negative prompt rows in one batch; 1 disables it, 0 is the unconditional model.
            temperature (`float`, defaults to 1.0): Sampling temperature (0 = argmax); for masking also the scale of
                the confidence noise, annealed to zero over the steps.
            generator (`torch.Generator` or a list, one per image, *optional*): For reproducible sampling.
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"`, `"pt"` or `"codes"`.
            return_dict (`bool`, defaults to `True`): Return a [`VQDiscreteDiffusionPipelineOutput`], not a tuple.
            callback_on_step_end (`Callable`, *optional*): As in [`VQDiscreteDiffusionPipeline`].
            return_intermediates (`bool`): Also return the decoded images after every step.

        A prompt longer than the denoiser's text length (`pipe.max_text_length` tokens) is a ValueError.
        """
        if prompt is None:
            raise ValueError('`prompt` is required (a string or a list of strings; "" samples unconditionally)')
        num_steps = self.resolve_num_steps(num_steps, num_inference_steps)
        self.check_output_type(output_type)
        guidance_scale, temperature = self.check_sampling_arguments(guidance_scale, temperature)
        start_tokens, start_mask, batch_size, guided = self.prompt_start_tokens(
            prompt, negative_prompt, num_images_per_prompt, guidance_scale
        )
        generator = check_generator(generator, batch_size)
        return self.denoise(start_tokens, start_mask, batch_size, guided, num_steps, guidance_scale, temperature,
                            generator, output_type=output_type, return_dict=return_dict,
                            callback_on_step_end=callback_on_step_end,
                            return_intermediates=return_intermediates)  # fmt: skip
