"""`VQAutoregressiveTextToImagePipeline`: DALL-E style — one causal LM over `[text tokens, BOS, image codes]` samples
the codes of a prompt (KV cache, classifier-free guidance against the empty or a negative prompt)."""

from collections.abc import Callable

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..models.vq_model import VQVAEModel
from ..utils.checks import check_generator
from .autoregressive import GeneratorType, VQAutoregressivePipeline
from .pipeline_vq import VQPipelineOutput
from .text_conditioning import TextConditioningMixin


class VQAutoregressiveTextToImagePipeline(TextConditioningMixin, VQAutoregressivePipeline):
    r"""
    Text-to-image with an autoregressive prior over codes (DALL-E style: text and code vocabularies in one model).

    Components:
        vqvae ([`VQVAEModel`]): Decodes code grids to images.
        tokenizer ([`~transformers.PreTrainedTokenizerFast`]): Turns prompts into the prior's prefix ids (trained on
            the captions with `vq_hub.text.train_caption_tokenizer`, or any `AutoTokenizer`).
        prior ([`~transformers.PreTrainedModel`]): A causal LM (`GPT2LMHeadModel` by default) over
            `[text tokens, BOS, codes]`, its config built by `autoregressive_prior_config(…, prefix_vocab_size=
            len(tokenizer), prefix_length=…)`.
    """

    model_cpu_offload_seq = "prior->vqvae"
    diffusion_counterpart = "VQDiscreteDiffusionTextToImagePipeline"
    card_description = "a DALL-E-style causal transformer over text tokens followed by image codes"

    def __init__(self, vqvae: VQVAEModel, tokenizer: PreTrainedTokenizerBase, prior: PreTrainedModel):
        super().__init__(vqvae=vqvae, prior=prior)
        self.register_modules(tokenizer=tokenizer)
        self.check_tokenizer()

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        guidance_scale: float = 3.0,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: GeneratorType = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        **kwargs,
    ) -> VQPipelineOutput | tuple:
        r"""
        Sample the code grids of `prompt` token by token and decode them.

        Args:
            prompt (`str` or `list[str]`): What to draw; `""` samples unconditionally.
            negative_prompt (`str` or `list[str]`, *optional*): Guide away from this (one, or one per prompt)
                instead of from the empty prompt. Used only with guidance (`guidance_scale` ≠ 1).
            num_images_per_prompt (`int`, defaults to 1): Images per prompt; the batch is prompts × this.
            guidance_scale (`float`, defaults to 3.0): Classifier-free guidance, `uncond + s·(cond − uncond)` on the
                logits, with the prompt rows and the empty/negative prompt rows in one batch. 1 disables it (the
                conditional model alone), 0 is the unconditional model.
            temperature (`float`, defaults to 1.0): Divides the logits; 0 means greedy (argmax) decoding.
            top_k (`int`, *optional*), top_p (`float`, *optional*): Keep the k most likely codes / the smallest set
                with probability ≥ p.
            generator (`torch.Generator` or a list, one per image, *optional*): For reproducible sampling.
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"`, `"pt"` or `"codes"` (no decoding).
            return_dict (`bool`, defaults to `True`): Return a [`VQPipelineOutput`] rather than a tuple.
            callback_on_step_end (`Callable`, *optional*): Called as `callback(pipe, step, position,
                {"codes": codes so far})` after every sampled code.

        Returns:
            [`VQPipelineOutput`] with `images` and `codes` `(B, h, w)`, images of the first prompt first.

        A prompt longer than the prior's text length (`pipe.max_text_length` tokens) is a ValueError.
        """
        guidance_scale, temperature, top_k, top_p = self.check_call_arguments(kwargs, output_type, guidance_scale,
                                                                              temperature, top_k, top_p)  # fmt: skip
        if prompt is None:
            raise ValueError('`prompt` is required (a string or a list of strings; "" samples unconditionally)')

        start_tokens, start_mask, batch_size, guided = self.prompt_start_tokens(
            prompt, negative_prompt, num_images_per_prompt, guidance_scale
        )
        generator = check_generator(generator, batch_size)
        codes = self.sample_codes(start_tokens, start_mask, batch_size, guided, guidance_scale, temperature, top_k,
                                  top_p, generator, None, callback_on_step_end)  # fmt: skip
        return self.make_output(codes, output_type, return_dict)
