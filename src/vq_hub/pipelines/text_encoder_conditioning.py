"""What the cross-attention text-to-image pipelines share: a `text_encoder` and its `tokenizer` as components, prompts
(or precomputed `prompt_embeds`) → the states the prior cross-attends to, with the empty or negative prompt's states
below them for classifier-free guidance, as diffusers' text-to-image pipelines take them."""

import torch
import torch.nn.functional as F

from ..models.cross_attention import attends_by_cross_attention, text_hidden_size
from ..text import check_prompts
from ..text_encoders import encode_text, text_length_limit, tokenize_for_encoder
from ..utils.checks import check_int
from .text_conditioning import PromptPipelineMixin

EmbedsAndMask = tuple[torch.Tensor, torch.LongTensor]


def pad_states(states: torch.Tensor, mask: torch.LongTensor, length: int) -> EmbedsAndMask:
    """Right-pad `(B, T, D)` states and their `(B, T)` mask to `length` tokens (zeros, mask 0)."""
    extra = length - states.shape[1]
    return F.pad(states, (0, 0, 0, extra)), F.pad(mask, (0, extra))


def stack_states(first: EmbedsAndMask, second: EmbedsAndMask) -> EmbedsAndMask:
    """Two batches of states and masks, padded to a common length, one below the other."""
    length = max(first[0].shape[1], second[0].shape[1])
    (a, a_mask), (b, b_mask) = pad_states(*first, length), pad_states(*second, length)
    return torch.cat([a, b]), torch.cat([a_mask, b_mask])


class TextEncoderConditioningMixin(PromptPipelineMixin):
    """Mixed into a [`VQPipeline`] with `text_encoder` and `tokenizer` components and a prior built with
    cross-attention (`vq_hub.models.cross_attention`)."""

    card_tags = ("text-to-image", "cross-attention", "text-encoder")

    def check_text_components(self) -> None:
        """The prior must cross-attend to states of the encoder's width and take no class or prefix; the tokenizer
        needs a pad token and ids within the encoder's embedding table."""
        config, vocabulary = self.prior_config, self.vocabulary
        if not attends_by_cross_attention(config):
            raise ValueError(f"the prior of a {type(self).__name__} must cross-attend to the text: build its "
                             "config with `vq_hub.cross_attention_prior_config` / `cross_attention_denoiser_config`")
        if vocabulary.num_classes or vocabulary.prefix_length:
            raise ValueError(f"the prior of a {type(self).__name__} sees the text by cross-attention only; its "
                             "config has classes or a prefix vocabulary")  # fmt: skip
        width, prior_width = text_hidden_size(self.text_encoder.config), config.hidden_size
        if width != prior_width:
            raise ValueError(f"`text_encoder` gives {width}-wide states, but the prior cross-attends to "
                             f"{prior_width}-wide ones (its hidden_size): build it with the encoder's width")
        if self.tokenizer.pad_token_id is None:
            raise ValueError("`tokenizer` has no pad token: prompts are padded (add one)")
        table = self.text_encoder.get_input_embeddings().num_embeddings
        if len(self.tokenizer) > table:
            raise ValueError(f"`tokenizer` has {len(self.tokenizer)} tokens, more than the text encoder's "
                             f"{table} embeddings: pass the tokenizer the encoder was trained with")  # fmt: skip

    @property
    def max_text_length(self) -> int:
        """The longest prompt, in tokens: the tokenizer's `model_max_length`, capped by the encoder's positions."""
        return text_length_limit(self.tokenizer, self.text_encoder)

    def embed_prompts(self, prompts: list[str], name: str = "prompt") -> EmbedsAndMask:
        """`(states (B, T, D), attention mask (B, T))` of the text encoder for `prompts`."""
        ids, mask = tokenize_for_encoder(self.tokenizer, prompts, self.max_text_length, name=name)
        with torch.no_grad():
            states = encode_text(self.text_encoder, ids, mask)
        return states, mask.to(states.device)

    def check_embeds(self, embeds, mask, name: str) -> EmbedsAndMask:
        """Given `(B, T, D)` states (and their `(B, T)` mask, all ones when None) checked against the prior."""
        width = self.prior_config.hidden_size
        if not isinstance(embeds, torch.Tensor) or not embeds.is_floating_point() or embeds.ndim != 3 or \
                embeds.shape[-1] != width or embeds.shape[0] == 0 or embeds.shape[1] == 0:  # fmt: skip
            shape = tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
            raise ValueError(f"`{name}` must be a float tensor (B, T, {width}) of text-encoder states, got {shape}")
        if mask is None:
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(embeds.shape[:2]):
            raise ValueError(f"`{name.replace('embeds', 'attention_mask')}` must be a tensor {tuple(embeds.shape[:2])} "
                             f"like `{name}`")  # fmt: skip
        return embeds, mask.long()

    def encode_prompt(
        self,
        prompt: str | list[str] | None,
        device: torch.device | None = None,
        num_images_per_prompt: int = 1,
        do_classifier_free_guidance: bool = True,
        negative_prompt: str | list[str] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.LongTensor, torch.Tensor | None, torch.LongTensor | None]:
        r"""
        Encode prompts with the text encoder, as diffusers' pipelines do.

        Args:
            prompt (`str` or `list[str]`): What to draw (or `prompt_embeds`); `""` is the unconditional input.
            device (`torch.device`, *optional*): Where the states go (default: the pipeline's execution device).
            num_images_per_prompt (`int`): Each prompt's states are repeated this many times.
            do_classifier_free_guidance (`bool`): Also return the negative states: of `negative_prompt`, of
                `negative_prompt_embeds`, or of the empty prompt.
            negative_prompt (`str` or `list[str]`, *optional*): One, or one per prompt.
            prompt_embeds, negative_prompt_embeds (`torch.Tensor` `(B, T, D)`, *optional*): Precomputed states, with
                `prompt_attention_mask` / `negative_prompt_attention_mask` `(B, T)` (1 = a token; default all ones).

        Returns:
            `(prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask)`, the
            negative ones `None` without guidance.
        """
        device = device or self._execution_device
        repeats = check_int(num_images_per_prompt, "num_images_per_prompt", minimum=1)
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError('give `prompt` or `prompt_embeds`, exactly one ("" samples unconditionally)')
        if prompt is not None:
            prompts = check_prompts(prompt, "prompt")
            embeds, mask = self.embed_prompts(prompts)
        else:
            embeds, mask = self.check_embeds(prompt_embeds, prompt_attention_mask, "prompt_embeds")
        count = embeds.shape[0]
        negative = None
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("give `negative_prompt` or `negative_prompt_embeds`, not both")
        if negative_prompt is not None:  # checked even when guidance is off: a bad negative prompt is an error
            negatives = check_prompts(negative_prompt, "negative_prompt")
            if len(negatives) not in (1, count):
                raise ValueError(f"`negative_prompt` must be one prompt or one per prompt ({count}), got "
                                 f"{len(negatives)}")  # fmt: skip
            negative = self.embed_prompts(negatives * (count // len(negatives)), name="negative_prompt")
        elif negative_prompt_embeds is not None:
            negative = self.check_embeds(negative_prompt_embeds, negative_prompt_attention_mask,
                                         "negative_prompt_embeds")  # fmt: skip
            if negative[0].shape[0] not in (1, count):
                raise ValueError(f"`negative_prompt_embeds` must hold 1 or {count} rows like `prompt_embeds`, got "
                                 f"{negative[0].shape[0]}")  # fmt: skip
            negative = tuple(part.expand(count, *part.shape[1:]) for part in negative)
        elif do_classifier_free_guidance:
            negative = tuple(part.expand(count, *part.shape[1:]) for part in self.embed_prompts([""]))
        dtype = getattr(self, self.prior_component).dtype  # the states enter the prior's projections

        def placed(states, attention_mask):
            return (states.to(device, dtype).repeat_interleave(repeats, dim=0),
                    attention_mask.to(device).repeat_interleave(repeats, dim=0))  # fmt: skip

        embeds, mask = placed(embeds, mask)
        if not do_classifier_free_guidance or negative is None:
            return embeds, mask, None, None
        return (embeds, mask, *placed(*negative))

    def prompt_context(
        self, prompt, negative_prompt, num_images_per_prompt: int, guidance_scale: float, prompt_embeds=None,
        negative_prompt_embeds=None, prompt_attention_mask=None, negative_prompt_attention_mask=None,
    ) -> tuple[dict, int, bool]:  # fmt: skip
        """`(prior inputs, batch size, guided)`: the `encoder_hidden_states` / `encoder_attention_mask` the prior
        cross-attends to, one row per image, followed — when guidance is on (`guidance_scale` ≠ 1) — by the negative
        (or empty) prompt's rows."""
        guided = guidance_scale != 1.0
        embeds, mask, negative, negative_mask = self.encode_prompt(
            prompt, None, num_images_per_prompt, guided, negative_prompt, prompt_embeds, negative_prompt_embeds,
            prompt_attention_mask, negative_prompt_attention_mask,
        )  # fmt: skip
        batch_size = embeds.shape[0]
        if guided:
            embeds, mask = stack_states((embeds, mask), (negative, negative_mask))
        return {"encoder_hidden_states": embeds, "encoder_attention_mask": mask}, batch_size, guided

    def empty_prompt_inputs(self, rows: int) -> dict:
        """The empty prompt's states for `rows` rows, as the prior takes them (the codec's unconditional input)."""
        states, mask = self.embed_prompts([""])
        dtype = getattr(self, self.prior_component).dtype
        return {"encoder_hidden_states": states.to(dtype).expand(rows, -1, -1),
                "encoder_attention_mask": mask.expand(rows, -1)}  # fmt: skip

    def bos_start_tokens(self, rows: int) -> tuple[torch.LongTensor, torch.LongTensor]:
        """`(tokens, attention mask)` `(rows, 1)`: BOS, all a cross-attention prior sees before its first code."""
        vocabulary = self.vocabulary
        conditions = torch.full((rows,), vocabulary.bos_token_id, dtype=torch.long, device=self._execution_device)
        return vocabulary.start_tokens(conditions)
