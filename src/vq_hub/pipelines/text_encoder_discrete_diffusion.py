"""`VQDiscreteDiffusionTextEncoderPipeline`: MUSE style — a text encoder reads the prompt, a bidirectional denoiser
cross-attends to its states and unmasks a whole code grid over a few steps."""

from collections.abc import Callable

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..models.vq_model import VQVAEModel
from ..schedulers import DiscreteDiffusionScheduler
from ..utils.checks import check_generator
from .discrete_diffusion import VQDiscreteDiffusionPipeline, VQDiscreteDiffusionPipelineOutput
from .text_encoder_conditioning import TextEncoderConditioningMixin


class VQDiscreteDiffusionTextEncoderPipeline(TextEncoderConditioningMixin, VQDiscreteDiffusionPipeline):
    r"""
    Text-to-image with a text encoder and a discrete-diffusion denoiser that cross-attends to it (MUSE style).

    Components:
        vqvae ([`VQVAEModel`]): Decodes code grids to images (and encodes images for inpainting).
        text_encoder ([`~transformers.PreTrainedModel`]): Any transformers text encoder (`T5EncoderModel`,
            `CLIPTextModel`, `BertModel`, …) whose hidden size is the denoiser's.
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]): The text encoder's tokenizer.
        denoiser ([`~transformers.PreTrainedModel`]): A masked LM over `[BOS, x_t]` with cross-attention layers
            (`BertForMaskedLM` by default), its config built by `cross_attention_denoiser_config(vqvae,
            text_encoder.config, …)`; it predicts the clean codes at every grid position.
        scheduler ([`DiscreteDiffusionScheduler`]): The corruption and the reverse step.
    """

    model_cpu_offload_seq = "text_encoder->denoiser->vqvae"
    card_description = ("a MUSE-style discrete-diffusion transformer that denoises code grids cross-attending to the "
                        "states of a text encoder (a pipeline component)")  # fmt: skip

    def __init__(
        self, vqvae: VQVAEModel, text_encoder: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
        denoiser: PreTrainedModel, scheduler: DiscreteDiffusionScheduler,
    ):  # fmt: skip
        super().__init__(vqvae=vqvae, denoiser=denoiser, scheduler=scheduler)
        self.register_modules(text_encoder=text_encoder, tokenizer=tokenizer)
        self.check_text_components()

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
        image=None,
        mask=None,
        codes: torch.LongTensor | None = None,
        keep_mask: torch.BoolTensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        return_intermediates: bool = False,
        num_inference_steps: int | None = None,
    ) -> VQDiscreteDiffusionPipelineOutput | tuple:
        r"""
        Denoise the code grids of `prompt` from full corruption in `num_steps` steps and decode them.

        Args:
            prompt (`str` or `list[str]`): What to draw; `""` samples unconditionally. Or `prompt_embeds`.
            negative_prompt (`str` or `list[str]`, *optional*): Guide away from this (one, or one per prompt)
                instead of from the empty prompt. Used only with guidance (`guidance_scale` ≠ 1).
            num_images_per_prompt (`int`, defaults to 1): Images per prompt; the batch is prompts × this.
            num_steps (`int`, *optional*): Denoising steps, from 1 to the scheduler's `num_train_timesteps` (default
                50, or fewer when the scheduler has fewer). `num_inference_steps` is an alias.
            guidance_scale (`float`, defaults to 3.0): Classifier-free guidance on the logits, the prompt rows and
                the empty/negative prompt rows in one batch; 1 disables it.
            temperature (`float`, defaults to 1.0): Sampling temperature (0 = argmax); for masking also the scale of
                the confidence noise, annealed to zero over the steps.
            generator (`torch.Generator` or a list, one per image, *optional*): For reproducible sampling.
            image, mask, codes, keep_mask: Inpainting, as in [`VQDiscreteDiffusionPipeline`]: one image (or grid of
                codes) per sampled image.
            prompt_embeds, negative_prompt_embeds (`torch.Tensor` `(B, T, D)`, *optional*), prompt_attention_mask,
                negative_prompt_attention_mask (`(B, T)`, *optional*): Precomputed text-encoder states
                ([`~VQDiscreteDiffusionTextEncoderPipeline.encode_prompt`]) instead of prompts.
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"`, `"pt"` or `"codes"`.
            return_dict (`bool`, defaults to `True`): Return a [`VQDiscreteDiffusionPipelineOutput`], not a tuple.
            callback_on_step_end (`Callable`, *optional*): As in [`VQDiscreteDiffusionPipeline`].
            return_intermediates (`bool`): Also return the decoded images after every step.
        """
        num_steps = self.resolve_num_steps(num_steps, num_inference_steps)
        self.check_output_type(output_type)
        guidance_scale, temperature = self.check_sampling_arguments(guidance_scale, temperature)
        known, keep = self.prepare_known_codes(image, mask, codes, keep_mask)
        text, batch_size, guided = self.prompt_context(
            prompt, negative_prompt, num_images_per_prompt, guidance_scale, prompt_embeds, negative_prompt_embeds,
            prompt_attention_mask, negative_prompt_attention_mask,
        )  # fmt: skip
        self.check_batch_size(batch_size, known)
        generator = check_generator(generator, batch_size)
        start_tokens, start_mask = self.bos_start_tokens(2 * batch_size if guided else batch_size)
        return self.denoise(start_tokens, start_mask, batch_size, guided, num_steps, guidance_scale, temperature,
                            generator, known, keep, output_type, return_dict, callback_on_step_end,
                            return_intermediates, prior_inputs=text)  # fmt: skip
