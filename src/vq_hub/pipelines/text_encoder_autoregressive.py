"""`VQAutoregressiveTextEncoderPipeline`: Parti style — a text encoder reads the prompt, a causal transformer over
image codes cross-attends to its states and samples the codes one by one (KV cache; transformers caches the
cross-attention keys and values after the first code)."""

from collections.abc import Callable

import torch
from transformers import Cache, DynamicCache, EncoderDecoderCache, PreTrainedModel, PreTrainedTokenizerBase

from ..models.vq_model import VQVAEModel
from ..utils.checks import check_generator
from .autoregressive import GeneratorType, VQAutoregressivePipeline
from .pipeline_vq import VQPipelineOutput
from .text_encoder_conditioning import TextEncoderConditioningMixin


class VQAutoregressiveTextEncoderPipeline(TextEncoderConditioningMixin, VQAutoregressivePipeline):
    r"""
    Text-to-image with a text encoder and an autoregressive prior that cross-attends to it (Parti style).

    Components:
        vqvae ([`VQVAEModel`]): Decodes code grids to images (and encodes images for completion).
        text_encoder ([`~transformers.PreTrainedModel`]): Any transformers text encoder (`T5EncoderModel`,
            `CLIPTextModel`, `BertModel`, …) whose hidden size is the prior's.
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]): The text encoder's tokenizer.
        prior ([`~transformers.PreTrainedModel`]): A causal LM over `[BOS, codes]` with cross-attention layers
            (`GPT2LMHeadModel` by default), its config built by `cross_attention_prior_config(vqvae,
            text_encoder.config, …)`.
    """

    model_cpu_offload_seq = "text_encoder->prior->vqvae"
    diffusion_counterpart = "VQDiscreteDiffusionTextEncoderPipeline"
    card_description = ("a Parti-style causal transformer over image codes that cross-attends to the states of a text "
                        "encoder (a pipeline component)")  # fmt: skip

    def __init__(
        self, vqvae: VQVAEModel, text_encoder: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
        prior: PreTrainedModel,
    ):  # fmt: skip
        super().__init__(vqvae=vqvae, prior=prior)
        self.register_modules(text_encoder=text_encoder, tokenizer=tokenizer)
        self.check_text_components()

    def make_cache(self, batch_size: int, max_length: int, static: bool | None = None) -> Cache:
        """The self-attention cache of `VQAutoregressivePipeline.make_cache` with a cross-attention cache beside it,
        which holds the text's keys and values once the first code is drawn."""
        return EncoderDecoderCache(super().make_cache(batch_size, max_length, static),
                                   DynamicCache(config=self.prior.config))  # fmt: skip

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
        image=None,
        num_prefix_rows: int | None = None,
        prefix_codes: torch.LongTensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        **kwargs,
    ) -> VQPipelineOutput | tuple:
        r"""
        Sample the code grids of `prompt` token by token and decode them.

        Args:
            prompt (`str` or `list[str]`): What to draw; `""` samples unconditionally. Or `prompt_embeds`.
            negative_prompt (`str` or `list[str]`, *optional*): Guide away from this (one, or one per prompt)
                instead of from the empty prompt. Used only with guidance (`guidance_scale` ≠ 1).
            num_images_per_prompt (`int`, defaults to 1): Images per prompt; the batch is prompts × this.
            guidance_scale (`float`, defaults to 3.0): Classifier-free guidance, `uncond + s·(cond − uncond)` on the
                logits, the prompt rows and the empty/negative prompt rows in one batch; 1 disables it.
            temperature (`float`, defaults to 1.0): Divides the logits; 0 means greedy (argmax) decoding.
            top_k (`int`, *optional*), top_p (`float`, *optional*): Keep the k most likely codes / the smallest set
                with probability ≥ p.
            generator (`torch.Generator` or a list, one per image, *optional*): For reproducible sampling.
            image, num_prefix_rows, prefix_codes: Completion, as in [`VQAutoregressivePipeline`]: one image (or
                row of codes) per sampled image, its first rows kept.
            prompt_embeds, negative_prompt_embeds (`torch.Tensor` `(B, T, D)`, *optional*), prompt_attention_mask,
                negative_prompt_attention_mask (`(B, T)`, *optional*): Precomputed text-encoder states
                ([`~VQAutoregressiveTextEncoderPipeline.encode_prompt`]) instead of prompts.
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"`, `"pt"` or `"codes"` (no decoding).
            return_dict (`bool`, defaults to `True`): Return a [`VQPipelineOutput`] rather than a tuple.
            callback_on_step_end (`Callable`, *optional*): Called as `callback(pipe, step, position,
                {"codes": codes so far})` after every sampled code.

        Returns:
            [`VQPipelineOutput`] with `images` and `codes` `(B, h, w)`, images of the first prompt first.
        """
        guidance_scale, temperature, top_k, top_p = self.check_call_arguments(kwargs, output_type, guidance_scale,
                                                                              temperature, top_k, top_p)  # fmt: skip

        prefix = self.prepare_prefix(image, num_prefix_rows, prefix_codes)
        text, batch_size, guided = self.prompt_context(
            prompt, negative_prompt, num_images_per_prompt, guidance_scale, prompt_embeds, negative_prompt_embeds,
            prompt_attention_mask, negative_prompt_attention_mask,
        )  # fmt: skip
        self.check_batch_size(batch_size, prefix)
        generator = check_generator(generator, batch_size)
        start_tokens, start_mask = self.bos_start_tokens(2 * batch_size if guided else batch_size)
        codes = self.sample_codes(start_tokens, start_mask, batch_size, guided, guidance_scale, temperature, top_k,
                                  top_p, generator, prefix, callback_on_step_end, prior_inputs=text)  # fmt: skip
        return self.make_output(codes, output_type, return_dict)
