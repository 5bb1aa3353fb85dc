"""`VQAutoregressivePipeline`: a transformers causal LM samples codes one by one (KV cache), the tokenizer decodes."""

from collections.abc import Callable

import torch
from transformers import Cache, DynamicCache, PreTrainedModel, StaticCache
from transformers.generation.logits_process import LogitsProcessorList, TopKLogitsWarper, TopPLogitsWarper

from ..code_levels import codes_to_sequence
from ..models.priors import cache_keyword
from ..models.vq_model import VQVAEModel
from ..utils.checks import check_float, check_generator, check_int
from .graphed_decoding import GraphedDecodeStep
from .pipeline_vq import VQPipeline, VQPipelineOutput

GeneratorType = torch.Generator | list[torch.Generator] | None


def sample_from_logits(logits: torch.Tensor, generator: GeneratorType = None) -> torch.LongTensor:
    """One id per row of `(B, V)` logits (already warped); `generator` may be one or one per row."""
    return sample_from_probabilities(torch.softmax(logits.float(), dim=-1), generator)


def sample_from_probabilities(probs: torch.Tensor, generator: GeneratorType = None) -> torch.LongTensor:
    """One id per row of `(B, V)` probabilities, drawn on the generator's device; `generator` may be one per row."""
    if isinstance(generator, list):
        return torch.cat([sample_from_probabilities(row[None], g) for row, g in zip(probs, generator)])
    device = generator.device if generator is not None else probs.device
    return torch.multinomial(probs.to(device), 1, generator=generator).to(probs.device)[:, 0]


class VQAutoregressivePipeline(VQPipeline):
    r"""
    Sample images with an autoregressive prior over codes (taming-transformers / LlamaGen style).

    Components:
        vqvae ([`VQVAEModel`]): Decodes code grids to images (and encodes images for completion).
        prior ([`~transformers.PreTrainedModel`]): A causal LM over the vocabulary of
            [`~vq_hub.models.priors.CodeVocabulary`] (`GPT2LMHeadModel` by default; any `AutoModelForCausalLM`), or
            a [`~vq_hub.FactorizedCodePrior`] over a binary tokenizer's codes (it chooses each code group by group).
    """

    model_cpu_offload_seq = "prior->vqvae"
    # How the KV cache is held while sampling (a runtime setting, not saved): "dynamic", transformers' DynamicCache,
    # which grows by concatenation each step; or "static", preallocated to the whole sequence and written in place,
    # with fixed shapes for `torch.compile`. Dynamic is the default: it was as fast or faster on CPU in
    # benchmarks/bench_sampling.py, which times both.
    cache_implementation = "dynamic"
    # Record the per-code step (forward, guidance, top-k/top-p) once as a CUDA graph and replay it for every code
    # (a runtime setting, not saved; see `graphed_decoding.py`). It implies the static cache. The codes equal the eager
    # static-cache sampler's with the same generator. Off by default: the recording costs a warm-up step and pays back
    # on runs of tens of codes and more on a GPU (`vq-hub generate` / `evaluate` turn it on there); off CUDA the same
    # step runs without a graph.
    cuda_graphs = False
    diffusion_counterpart = "VQDiscreteDiffusionPipeline (a discrete-diffusion prior)"  # named when steps are passed
    card_description = "an autoregressive transformer over discrete image codes"
    card_tags = ("autoregressive", "image-tokens")

    def __init__(self, vqvae: VQVAEModel, prior: PreTrainedModel):
        super().__init__()
        self.register_modules(vqvae=vqvae, prior=prior)
        self.check_prior_config()

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int | None = None,
        class_labels: int | list[int] | torch.Tensor | None = None,
        guidance_scale: float = 1.0,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: GeneratorType = None,
        image=None,
        num_prefix_rows: int | None = None,
        prefix_codes: torch.LongTensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        **kwargs,
    ) -> VQPipelineOutput | tuple:
        r"""
        Sample code grids token by token and decode them.

        Args:
            batch_size (`int`, *optional*): Images to sample (default: the number of prefixes, images or class
                labels given, else 1).
            class_labels (`int`, `list[int]` or `torch.Tensor`, *optional*): One label for all, or one per image;
                -1 samples that row unconditionally. Needs a class-conditional prior.
            guidance_scale (`float`, defaults to 1.0): Classifier-free guidance, `uncond + s·(cond − uncond)` on
                the logits; the conditional and unconditional rows run as one batch. 1 disables it.
            temperature (`float`, defaults to 1.0): Divides the logits; 0 means greedy (argmax) decoding.
            top_k (`int`, *optional*), top_p (`float`, *optional*): Keep the k most likely codes / the smallest set
                with probability ≥ p.
            generator (`torch.Generator` or a list, one per image, *optional*): For reproducible sampling.
            image (PIL image(s) or `torch.Tensor` in [-1, 1], *optional*): Complete these images: their first
                `num_prefix_rows` rows of codes are kept and the rest is sampled.
            num_prefix_rows (`int`, *optional*): Rows of codes kept from `image` (default: half the grid).
            prefix_codes (`torch.LongTensor`, *optional*): `(B, L)` first codes in raster order, or `(B, rows, w)`
                first rows, kept as they are; the remaining `h·w − L` codes are sampled. For a residual tokenizer,
                `(B, L)` in the prior's order (each position's depths together) or `(B, depth, rows, w)`.
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"`, `"pt"` or `"codes"` (no decoding).
            return_dict (`bool`, defaults to `True`): Return a [`VQPipelineOutput`] rather than a tuple.
            callback_on_step_end (`Callable`, *optional*): Called as `callback(pipe, step, position,
                {"codes": codes so far})` after every sampled code.

        Returns:
            [`VQPipelineOutput`] with `images` and `codes` `(B, h, w)` (`(B, depth, h, w)` for a residual tokenizer).
        """
        guidance_scale, temperature, top_k, top_p = self.check_call_arguments(kwargs, output_type, guidance_scale,
                                                                              temperature, top_k, top_p)  # fmt: skip

        device = self._execution_device
        prefix = self.prepare_prefix(image, num_prefix_rows, prefix_codes)
        batch_size = self.check_batch_size(batch_size, prefix, class_labels)
        labels = self.check_class_labels(class_labels, batch_size)
        generator = check_generator(generator, batch_size)

        # [empty prefix, condition token] rows; guided sampling adds the unconditional (null class) rows below them.
        vocabulary = self.vocabulary
        conditions = vocabulary.condition_tokens(labels, batch_size, device)
        guided = labels is not None and guidance_scale != 1.0
        if guided:
            conditions = torch.cat([conditions, torch.full_like(conditions, vocabulary.null_class_token_id)])
        start_tokens, start_mask = vocabulary.start_tokens(conditions)
        codes = self.sample_codes(start_tokens, start_mask, batch_size, guided, guidance_scale, temperature, top_k,
                                  top_p, generator, prefix, callback_on_step_end)  # fmt: skip
        return self.make_output(codes, output_type, return_dict)

    def check_call_arguments(
        self, kwargs: dict, output_type: str, guidance_scale, temperature, top_k, top_p
    ) -> tuple[float, float, int | None, float | None]:
        """What every autoregressive call checks first: no denoising steps (they belong to `diffusion_counterpart`)
        and no unknown keyword in `kwargs`, the output type; returns `(guidance_scale, temperature, top_k, top_p)`
        checked."""
        for name in ("num_steps", "num_inference_steps"):
            if name in kwargs:
                raise TypeError(f"`{name}` does not apply to {type(self).__name__}, which samples one code per step; "
                                f"denoising steps belong to {self.diffusion_counterpart}")  # fmt: skip
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected arguments {sorted(kwargs)}")
        self.check_output_type(output_type)
        guidance_scale, temperature = self.check_sampling_arguments(guidance_scale, temperature)
        top_k = None if top_k is None else check_int(top_k, "top_k", minimum=1)
        top_p = None if top_p is None else check_float(top_p, "top_p", minimum=0.0, maximum=1.0, exclusive_minimum=True)
        return guidance_scale, temperature, top_k, top_p

    def sample_codes(
        self,
        start_tokens: torch.LongTensor,
        start_mask: torch.LongTensor,
        batch_size: int,
        guided: bool,
        guidance_scale: float = 1.0,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: GeneratorType = None,
        known_codes: torch.LongTensor | None = None,
        callback_on_step_end: Callable | None = None,
        prior_inputs: dict | None = None,
    ) -> torch.LongTensor:
        """The sampling loop every autoregressive pipeline shares: code grids `(B, h, w)` after `start_tokens`
        (`(B, S)`, or `(2B, S)` with the unconditional rows below the conditional ones when `guided`: everything
        before the first code, i.e. the prefix and the condition token, with its attention mask `start_mask`) and
        the `known_codes` `(B, L)` kept as they are. `prior_inputs` go to every call of the prior (a text encoder's
        `encoder_hidden_states` and `encoder_attention_mask`, one row per row of `start_tokens`)."""
        device = start_tokens.device
        num_codes = self.num_codes  # h·w, or h·w·depth of a residual tokenizer (`vq_hub.code_levels.CODE_ORDER`)
        codebook_size = self.vocabulary.codebook_size
        codes = torch.empty(batch_size, 0, dtype=torch.long, device=device) if known_codes is None else known_codes
        step_input = torch.cat([start_tokens, torch.cat([codes, codes]) if guided else codes], dim=1)
        total_length = start_tokens.shape[1] + num_codes
        # The mask of the whole sequence, made once; each step sees the prefix of it the cache holds (a view).
        full_mask = torch.cat([start_mask, start_mask.new_ones(start_mask.shape[0], num_codes)], dim=1)
        warpers = LogitsProcessorList()
        if top_k is not None:
            warpers.append(TopKLogitsWarper(top_k))
        if top_p is not None and top_p < 1:
            warpers.append(TopPLogitsWarper(top_p))

        finite = torch.ones((), dtype=torch.bool, device=device)  # checked once at the end: no sync per code

        def choose(logits: torch.Tensor) -> torch.LongTensor:
            """`(R, V)` logits → `(B,)` ids: guidance, then argmax at temperature 0, else warping and a draw."""
            finite.logical_and_(torch.isfinite(logits).all())
            if guided:
                conditional, unconditional = logits.chunk(2)
                logits = unconditional + guidance_scale * (conditional - unconditional)
            if temperature == 0:
                return logits.argmax(dim=-1)
            return sample_from_logits(warpers(None, logits / temperature), generator)

        if self.cuda_graphs and not self.supports_cuda_graphs:
            raise ValueError(f"`cuda_graphs` cannot record the decoding step of a {type(self.prior).__name__}: it "
                             "draws each code in parts (groups of bits), each draw outside a graph; set "
                             "`pipe.cuda_graphs = False`")  # fmt: skip
        prior_inputs = prior_inputs or {}
        cache = self.make_cache(step_input.shape[0], total_length, static=True if self.cuda_graphs else None)
        static = isinstance(getattr(cache, "self_attention_cache", cache), StaticCache)  # cross-attention: wrapped
        graphed: GraphedDecodeStep | None = None
        position = 0
        for step in self.progress_bar(range(num_codes - codes.shape[1])):
            if graphed is not None:  # every code after the first, with `cuda_graphs`: one replay
                output = graphed.run()
                next_codes = output if temperature == 0 else sample_from_probabilities(output, generator)
            else:
                length = position + step_input.shape[1]
                attention_mask = full_mask if static else full_mask[:, :length]
                output = self.prior_step(step_input, cache, attention_mask, **prior_inputs)
                position = length
                next_codes = self.choose_next_codes(output, choose, codebook_size)
                if self.cuda_graphs:  # the prefill (start tokens and known codes) is done: the steps are alike now
                    graphed = GraphedDecodeStep(
                        lambda tokens, kv, mask: self.next_code_logits(tokens, kv, mask, codebook_size, **prior_inputs),
                        cache,
                        full_mask, guided, guidance_scale, temperature, warpers,
                    )  # fmt: skip
            codes = torch.cat([codes, next_codes[:, None]], dim=1)
            if graphed is not None:
                graphed.load(next_codes)
            else:
                step_input = torch.cat([next_codes, next_codes])[:, None] if guided else next_codes[:, None]
            if callback_on_step_end is not None:
                callback_on_step_end(self, step, codes.shape[1] - 1, {"codes": codes})

        if graphed is not None:
            finite.logical_and_(graphed.finite)
        if not bool(finite):
            raise ValueError("the prior produced NaN or infinite logits: its weights are damaged (or it was trained "
                             "into divergence); no codes were returned")  # fmt: skip
        return self.sequence_to_codes(codes)

    def make_cache(self, batch_size: int, max_length: int, static: bool | None = None) -> Cache:
        """A fresh KV cache for `batch_size` rows of at most `max_length` tokens: static or dynamic as `static`
        says, or of `self.cache_implementation` when it is None."""
        if static is not None:
            return StaticCache(config=self.prior.config, max_cache_len=max_length) if static else \
                DynamicCache(config=self.prior.config)
        if self.cache_implementation == "dynamic":
            return DynamicCache(config=self.prior.config)
        if self.cache_implementation == "static":
            return StaticCache(config=self.prior.config, max_cache_len=max_length)
        raise ValueError(f"`cache_implementation` must be 'dynamic' or 'static', got {self.cache_implementation!r}")

    def prior_step(self, step_input: torch.LongTensor, cache: Cache, attention_mask: torch.LongTensor, **prior_inputs):
        """Feed the new tokens through the prior with its KV cache (`attention_mask` covers every token so far, or
        the whole sequence with a static cache: 0 on empty prefix slots; `prior_inputs`: a text encoder's states);
        the prior's output."""
        cache_argument = {cache_keyword(type(self.prior)): cache}
        return self.prior(input_ids=step_input, attention_mask=attention_mask, use_cache=True, **cache_argument,
                          **prior_inputs)  # fmt: skip

    def next_code_logits(
        self, step_input: torch.LongTensor, cache: Cache, attention_mask: torch.LongTensor, codebook_size: int,
        **prior_inputs,
    ) -> torch.Tensor:  # fmt: skip
        """`prior_step`'s float32 logits of the next code, over the K codes only (special tokens can never be
        sampled). A prior that chooses its codes in parts (`choose_next_codes`) has no such logits."""
        if not self.supports_cuda_graphs:
            raise ValueError(f"a {type(self.prior).__name__} gives no logits over all codes (it draws each code in "
                             "groups of bits): use it through the pipeline's call")  # fmt: skip
        return self.prior_step(step_input, cache, attention_mask, **prior_inputs).logits[:, -1, :codebook_size].float()

    def choose_next_codes(
        self, output, choose: Callable[[torch.Tensor], torch.LongTensor], codebook_size: int
    ) -> torch.LongTensor:
        """The next code of each image from the prior's `output`, with `choose` (`(R, V)` logits → `(B,)` ids:
        guidance, temperature, top-k/top-p, the draw). A prior may bring its own rule (`FactorizedCodePrior` chooses
        one group of bits after another); a stock causal LM's next code is chosen among its first K logits."""
        own_rule = getattr(self.prior, "choose_next_codes", None)
        if own_rule is not None:
            return own_rule(output, choose)
        return choose(output.logits[:, -1, :codebook_size].float())

    def empty_prompt_inputs(self, rows: int) -> dict:
        """What the prior takes beside its tokens for the unconditional input of `rows` rows (the codec's): nothing
        here; a text-encoder pipeline gives the empty prompt's states."""
        return {}

    @property
    def supports_cuda_graphs(self) -> bool:
        """Whether `cuda_graphs` can record the decoding step: a prior with its own rule for the next code draws
        inside the step (per group of bits), which a graph around the step cannot hold."""
        return not hasattr(self.prior, "choose_next_codes")

    def prepare_prefix(self, image, num_prefix_rows: int | None, prefix_codes) -> torch.LongTensor | None:
        """The known first codes `(B, L)` in raster order, from `image` + `num_prefix_rows` or `prefix_codes`."""
        height, width = self.code_grid_size
        if image is not None and prefix_codes is not None:
            raise ValueError("give `image` or `prefix_codes`, not both")
        if image is None and prefix_codes is None:
            if num_prefix_rows is not None:
                raise ValueError("`num_prefix_rows` needs an `image` to take the rows from")
            return None
        if image is not None:
            rows = height // 2 if num_prefix_rows is None else check_int(num_prefix_rows, "num_prefix_rows")
            if not 0 <= rows <= height:
                raise ValueError(f"`num_prefix_rows` must lie in [0, {height}] (the grid has {height} rows), "
                                 f"got {rows}")  # fmt: skip
            # (B, 0) for no rows: sampled from scratch; a residual tokenizer's rows keep every depth of their cells
            return codes_to_sequence(self.encode_images(image)[..., :rows, :])
        if num_prefix_rows is not None:
            raise ValueError("`num_prefix_rows` applies to `image`; with `prefix_codes` the prefix is what is given: "
                             "pass its first rows, e.g. `prefix_codes=codes[:, :rows]`")  # fmt: skip
        if not isinstance(prefix_codes, torch.Tensor):
            raise TypeError(f"`prefix_codes` must be an integer torch.Tensor, got {type(prefix_codes).__name__}")
        prefix = prefix_codes
        if prefix.shape[0] == 0:
            raise ValueError("`prefix_codes` is an empty batch: give at least one row of codes")
        depth = self.code_depth
        rows_shape = f"(B, rows, {width})" if depth == 1 else f"(B, {depth}, rows, {width})"
        if prefix.ndim == (3 if depth == 1 else 4):
            if prefix.shape[-1] != width or (depth > 1 and prefix.shape[1] != depth):
                raise ValueError(f"`prefix_codes` rows must be {width} codes wide, {rows_shape}, got shape "
                                 f"{tuple(prefix.shape)}")  # fmt: skip
            prefix = codes_to_sequence(prefix)
        if prefix.ndim != 2:
            raise ValueError(f"`prefix_codes` must be (B, L) or {rows_shape}, got shape {tuple(prefix.shape)}")
        if prefix.shape[1] > self.num_codes:
            raise ValueError(f"`prefix_codes` holds {prefix.shape[1]} codes, more than the {height}×{width}"
                             f"{'' if depth == 1 else f'×{depth}'} grid")  # fmt: skip
        return self.vocabulary.check_codes(prefix, "prefix_codes").to(self._execution_device)

