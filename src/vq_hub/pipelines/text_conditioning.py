"""What the text-to-image pipelines share: prompts (and negative prompts) → the `[text prefix, BOS]` rows a prior sees
before its first code, the tokenizer checked against the prior's prefix vocabulary, and sample grids of prompts."""

import torch

from ..data import image_grid
from ..text import check_prompts, encode_prompts
from ..utils.checks import check_int


class PromptPipelineMixin:
    """What every text-to-image pipeline shares, however the prior sees the text: the card and grids of prompts."""

    card_pipeline_tag = "text-to-image"
    card_tags = ("text-to-image",)
    card_prompt = "a caption like the training ones"  # the model card's example; training scripts set a real one

    def sample_grid(self, images_per_row: int = 8, prompts: list[str] | None = None, **call_kwargs):
        """One picture: a row of `images_per_row` samples per prompt in `prompts`. `call_kwargs` go to the call."""
        if prompts is None:
            raise ValueError(f"`prompts` are needed for a grid of a {type(self).__name__}: a row per prompt")
        rows = []
        for text in check_prompts(prompts, "prompts"):
            output = self(prompt=text, num_images_per_prompt=images_per_row, output_type="pt", **call_kwargs)
            rows.append(output.images * 2 - 1)
        return image_grid(rows)

    def card_call(self) -> str:
        return f"prompt=[{self.card_prompt!r}], guidance_scale=3.0"


class TextConditioningMixin(PromptPipelineMixin):
    """Mixed into a [`VQPipeline`] with a `tokenizer` component whose prior has a prefix vocabulary (the text)."""

    def check_tokenizer(self) -> None:
        """The tokenizer must be the prior's prefix vocabulary (token id j = prefix id j) and have a pad token."""
        vocabulary, tokenizer = self.vocabulary, self.tokenizer
        if vocabulary.prefix_length == 0:
            raise ValueError(f"the prior of a {type(self).__name__} needs a text prefix: build its config with "
                             "`prefix_vocab_size=len(tokenizer)` and `prefix_length=<max prompt tokens>`")  # fmt: skip
        if len(tokenizer) != vocabulary.prefix_vocab_size:
            raise ValueError(f"`tokenizer` has {len(tokenizer)} tokens, but the prior's prefix vocabulary has "
                             f"{vocabulary.prefix_vocab_size}: pass the tokenizer the prior was trained with")  # fmt: skip
        if tokenizer.pad_token_id is None:
            raise ValueError("`tokenizer` has no pad token: the empty prompt is made of pads (add one)")

    @property
    def max_text_length(self) -> int:
        """The longest prompt, in tokens, this pipeline accepts (the prior's `prefix_length`)."""
        return self.vocabulary.prefix_length

    def prompt_start_tokens(
        self, prompt, negative_prompt, num_images_per_prompt: int, guidance_scale: float
    ) -> tuple[torch.LongTensor, torch.LongTensor, int, bool]:
        """`(start tokens, attention mask, batch size, guided)`: `[prompt tokens, pads, BOS]` for every image (each
        prompt repeated `num_images_per_prompt` times), followed — when guidance is on (`guidance_scale` ≠ 1) — by the
        same rows for the negative prompts, or for the empty prompt (the unconditional input) without them."""
        prompts = check_prompts(prompt, "prompt")
        repeats = check_int(num_images_per_prompt, "num_images_per_prompt", minimum=1)
        guided = guidance_scale != 1.0
        negatives = [""] * len(prompts)
        if negative_prompt is not None:
            negatives = check_prompts(negative_prompt, "negative_prompt")
            if len(negatives) == 1:
                negatives = negatives * len(prompts)
            if len(negatives) != len(prompts):
                raise ValueError(f"`negative_prompt` must be one prompt or one per prompt ({len(prompts)}), got "
                                 f"{len(negatives)}")  # fmt: skip
        ids, mask = encode_prompts(self.tokenizer, prompts, self.max_text_length, name="prompt")
        if negative_prompt is not None:  # checked even when guidance is off: a bad negative prompt is an error
            negative_ids, negative_mask = encode_prompts(self.tokenizer, negatives, self.max_text_length,
                                                         name="negative_prompt")  # fmt: skip
        else:
            negative_ids, negative_mask = ids.clone(), torch.zeros_like(mask)  # the empty prompt: all pads
        if guided:
            ids, mask = torch.cat([ids, negative_ids]), torch.cat([mask, negative_mask])
        ids, mask = ids.repeat_interleave(repeats, dim=0), mask.repeat_interleave(repeats, dim=0)
        batch_size = len(prompts) * repeats
        vocabulary = self.vocabulary
        device = self._execution_device
        conditions = torch.full((ids.shape[0],), vocabulary.bos_token_id, dtype=torch.long, device=device)
        tokens, attention_mask = vocabulary.start_tokens(conditions, ids.to(device), mask.to(device))
        return tokens, attention_mask, batch_size, guided
