"""A prior over binary codes (LFQ, BSQ) whose input and output grow with 2^(bits per group), not 2^bits.

A tokenizer with 18 bits per code has 262,144 codes: a stock causal LM over them holds a 262,144-row embedding and a
262,144-way softmax at every position. `FactorizedCodePrior` splits each code's bits into G groups of g bits
(18 = 2 × 9, group 0 = the lowest bits), embeds a code as the sum of one embedding per group value, and predicts the
next code one group after another: G heads of 2^g logits.

The groups are predicted *conditionally* by default, as Open-MAGVIT2's autoregressive model does (its small
"intra" transformer sees the backbone's state and the sub-tokens already chosen): head j sees the backbone's state
plus an embedding of each group i < j of the same code. `p(code) = Π_j p(g_j | state, g_<j)` is then an exact
factorisation of any distribution over the 2^bits codes, and the sum of the per-group cross-entropies is exactly the
code's negative log-likelihood. With `conditional_groups=False` the groups are independent given the state (a product
distribution, as MaskBit's grouped bit tokens): the per-group sum is still the exact NLL of that product model, but
the model cannot express how the bits of one code depend on each other, so its best NLL is higher (measured in
docs/priors.md). Sampling conditional groups costs G small head evaluations per code, next to one backbone step.

The backbone is a stock transformers model (`AutoModel`: GPT-2, Llama, …) fed `inputs_embeds`; its own token
embedding holds only the special tokens (BOS, classes, prefix, pad), so the ids of [`CodeVocabulary`] are unchanged
and every pipeline builds the same sequences for this prior as for a stock one.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, Cache, PretrainedConfig, PreTrainedModel
from transformers.configuration_utils import SubConfigSpec
from transformers.utils import ModelOutput

from ..utils.checks import check_int
from .priors import CodeVocabulary, autoregressive_prior_config, cache_keyword


class FactorizedPriorConfig(PretrainedConfig):
    r"""
    Config of a [`FactorizedCodePrior`]: the code vocabulary (as a stock prior's config records it, so
    [`CodeVocabulary.from_config`] reads it back), the bit groups, and the stock transformers `backbone` config.

    Args:
        backbone (`dict` or `PretrainedConfig`): The transformer's config (any `AutoModel` type; GPT-2 by default).
            Its `vocab_size` counts the special tokens only (the ids from `codebook_size` on, shifted to 0).
        bits_per_group (`int`, defaults to 8): Bits per group g; the code's bits must split into whole groups.
        conditional_groups (`bool`, defaults to `True`): Group j's head sees groups < j of the same code (an exact
            factorisation); `False`: independent groups (a product distribution).
        codebook_size (`int`, defaults to 256): 2^bits. The other vocabulary fields (`num_classes`, `code_grid_size`,
            `prefix_vocab_size`, `prefix_length`, `vocab_size` and the token ids) are those of a stock prior's config
            ([`autoregressive_prior_config`]).
    """

    model_type = "vq_hub_factorized_prior"
    sub_configs_defaults = {"backbone": SubConfigSpec(config_class=AutoConfig, model_type="gpt2")}

    backbone: dict | PretrainedConfig | None = None
    bits_per_group: int = 8
    conditional_groups: bool = True
    codebook_size: int = 256
    num_classes: int = 0
    code_grid_size: list[int] | None = None
    prefix_vocab_size: int = 0
    prefix_length: int = 0
    vocab_size: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        size = check_int(self.codebook_size, "codebook_size", minimum=2)
        if size & (size - 1):
            raise ValueError(f"`codebook_size` must be a power of two (a binary tokenizer's 2^bits codes), got {size}")
        group = check_int(self.bits_per_group, "bits_per_group", minimum=1)
        if self.bits % group:
            raise ValueError(f"`bits_per_group` {group} must divide the code's {self.bits} bits (codebook_size "
                             f"{size} = 2^{self.bits})")  # fmt: skip

    @property
    def bits(self) -> int:
        return self.codebook_size.bit_length() - 1

    @property
    def num_groups(self) -> int:
        return self.bits // self.bits_per_group

    @property
    def group_size(self) -> int:
        """Values of one group: 2^bits_per_group."""
        return 2**self.bits_per_group

    def get_text_config(self, decoder=None, encoder=None) -> PretrainedConfig:
        """The backbone's config: what transformers' KV caches are sized by."""
        return self.backbone


@dataclass
class FactorizedPriorOutput(ModelOutput):
    """
    Output of [`FactorizedCodePrior`].

    Args:
        loss (`torch.Tensor`, *optional*): With `labels`: the mean per-code NLL, the sum of the groups' cross-entropies.
        group_logits (`torch.Tensor` of shape `(batch_size, sequence_length, num_groups, 2^bits_per_group)`): The
            logits of each group of the code after each position. With conditional groups, group j at position i is
            conditioned on groups < j of the token at i + 1 (teacher forcing: the code that position predicts).
            None when decoding (`use_cache=True` without `labels`): the code after the last position is not known
            yet, and [`~FactorizedCodePrior.choose_next_codes`] runs the heads on the last state with the groups it
            draws.
        last_hidden_state (`torch.Tensor` of shape `(batch_size, sequence_length, hidden_size)`): The backbone's
            output, what the group heads read.
        cache (`Cache`, *optional*): The backbone's KV cache.
    """

    loss: torch.Tensor | None = None
    group_logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    cache: Cache | None = None


class GroupHead(nn.Module):
    """One group's logits from the backbone's state (plus, when conditional, the earlier groups' embeddings): a
    residual MLP, so the groups already chosen can change the prediction non-linearly, then 2^g logits."""

    def __init__(self, hidden_size: int, group_size: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, 2 * hidden_size), nn.GELU(),
                                 nn.Linear(2 * hidden_size, hidden_size))  # fmt: skip
        self.out = nn.Linear(hidden_size, group_size)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.out(state + self.mlp(self.norm(state)))


class FactorizedCodePrior(PreTrainedModel):
    r"""
    An autoregressive prior over binary codes with per-group embeddings and heads (see the module docstring): the
    parameters and the softmax grow with `num_groups × 2^bits_per_group` instead of `2^bits`.

    Its inputs are those of a stock prior (`input_ids` in the [`CodeVocabulary`] of its config, `attention_mask`, a
    KV cache); a pipeline samples with it through [`~FactorizedCodePrior.choose_next_codes`].
    """

    config_class = FactorizedPriorConfig
    base_model_prefix = "backbone"
    _supports_sdpa = True
    _supports_attention_backend = True
    supports_gradient_checkpointing = True  # the backbone's blocks checkpoint (`--gradient_checkpointing`)
    _supports_cache_class = True

    def __init__(self, config: FactorizedPriorConfig):
        super().__init__(config)
        self.backbone = AutoModel.from_config(config.backbone)
        hidden, groups, size = config.backbone.hidden_size, config.num_groups, config.group_size
        self.code_embeddings = nn.ModuleList(nn.Embedding(size, hidden) for _ in range(groups))
        # Group j's head sees embeddings of groups < j: tables for groups 0 … G−2 (none when independent).
        context = groups - 1 if config.conditional_groups else 0
        self.group_context = nn.ModuleList(nn.Embedding(size, hidden) for _ in range(context))
        self.group_heads = nn.ModuleList(GroupHead(hidden, size) for _ in range(groups))
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Our own modules only (the backbone initialised itself): GPT-2's normal(0, 0.02)."""
        if module is self.backbone or any(module is m for m in self.backbone.modules()):
            return
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    @property
    def vocabulary(self) -> CodeVocabulary:
        return CodeVocabulary.from_config(self.config)

    # ------------------------------------------------------------------------------------------- codes ↔ groups

    def split_groups(self, codes: torch.LongTensor) -> torch.LongTensor:
        """Codes `(...)` → their groups `(..., G)`, group 0 the lowest `bits_per_group` bits."""
        return split_groups(codes, self.config.num_groups, self.config.bits_per_group)

    def join_groups(self, groups: torch.LongTensor) -> torch.LongTensor:
        """Groups `(..., G)` → codes `(...)` (the inverse of `split_groups`)."""
        return (groups << group_shifts(groups.shape[-1], self.config.bits_per_group, groups.device)).sum(dim=-1)

    def embed(self, input_ids: torch.LongTensor) -> torch.Tensor:
        """Codes: the sum of their groups' embeddings; special tokens: the backbone's own embedding rows."""
        codebook_size = self.config.codebook_size
        is_code = input_ids < codebook_size
        groups = self.split_groups(torch.where(is_code, input_ids, 0))
        codes = sum(table(groups[..., j]) for j, table in enumerate(self.code_embeddings))
        special = self.backbone.get_input_embeddings()(torch.where(is_code, 0, input_ids - codebook_size))
        return torch.where(is_code[..., None], codes, special)

    # ------------------------------------------------------------------------------------------- forward

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> FactorizedPriorOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): Ids of the code vocabulary.
            attention_mask (`torch.LongTensor`, *optional*): As for the backbone.
            labels (`torch.LongTensor`, *optional*): `(batch_size, sequence_length)` targets shifted inside, as for a
                transformers causal LM (position i predicts label i + 1); ids that are not codes (−100, special
                tokens) are not counted. `loss` is then the mean of the codes' summed group cross-entropies.
            cache (`Cache`, *optional*), use_cache (`bool`, *optional*): The backbone's KV cache (`past_key_values`:
                the name transformers releases before 5 gave it).
        """
        cache = cache if cache is not None else past_key_values
        backbone_cache = {} if cache is None else {cache_keyword(type(self.backbone)): cache}
        output = self.backbone(inputs_embeds=self.embed(input_ids), attention_mask=attention_mask,
                               use_cache=use_cache, **backbone_cache, **kwargs)  # fmt: skip
        hidden = output.last_hidden_state
        if use_cache and labels is None:  # decoding: the heads run in `choose_next_codes`, once per drawn code
            return FactorizedPriorOutput(last_hidden_state=hidden, cache=backbone_cache_of(output))
        # The code each position predicts: the next token when it is a code (teacher forcing for conditional groups).
        following = torch.cat([input_ids[:, 1:], input_ids.new_zeros(input_ids.shape[0], 1)], dim=1)
        following = torch.where(following < self.config.codebook_size, following, 0)
        group_logits = self.group_logits(hidden, self.split_groups(following))
        loss = None
        if labels is not None:
            loss = factorized_code_loss(group_logits[:, :-1], labels[:, 1:], self.config.codebook_size,
                                        self.config.bits_per_group)  # fmt: skip
        return FactorizedPriorOutput(loss=loss, group_logits=group_logits, last_hidden_state=hidden,
                                     cache=backbone_cache_of(output))  # fmt: skip

    def group_logits(self, hidden: torch.Tensor, groups: torch.LongTensor) -> torch.Tensor:
        """`(..., G, 2^g)` logits of every group from states `(..., hidden)`, group j seeing `groups[..., :j]`."""
        logits, state = [], hidden
        for j, head in enumerate(self.group_heads):
            logits.append(head(state))
            if j < len(self.group_context):
                state = state + self.group_context[j](groups[..., j])
        return torch.stack(logits, dim=-2)

    @torch.no_grad()
    def choose_next_codes(
        self, output: FactorizedPriorOutput, choose: Callable[[torch.Tensor], torch.LongTensor]
    ) -> torch.LongTensor:
        """The sampling hook of [`VQAutoregressivePipeline`]: the next code of each image from the state at the last
        position. `choose` turns `(R, 2^g)` logits into `(B,)` ids (guidance, temperature, top-k/top-p, the draw);
        the groups are chosen one after another, each chosen group fed to the later heads of all R rows (a guided
        batch's unconditional rows continue the same code)."""
        state = output.last_hidden_state[:, -1]
        groups = []
        for j, head in enumerate(self.group_heads):
            chosen = choose(head(state).float())
            groups.append(chosen)
            if j < len(self.group_context):
                state = state + self.group_context[j](chosen.repeat(state.shape[0] // chosen.shape[0]))
        return self.join_groups(torch.stack(groups, dim=-1))


def factorized_code_loss(
    group_logits: torch.Tensor, targets: torch.LongTensor, codebook_size: int, bits_per_group: int,
    reduction: str = "mean",
) -> torch.Tensor:  # fmt: skip
    """Per-code NLL in nats: the sum over groups of each group's cross-entropy. `group_logits` `(B, n, G, 2^g)`
    predict `targets` `(B, n)`; targets that are not codes (special ids, −100) are not counted. `reduction="none"`
    gives `(B, n)` (0 where not counted)."""
    counted = (targets >= 0) & (targets < codebook_size)
    codes = torch.where(counted, targets, 0)
    groups = split_groups(codes, group_logits.shape[-2], bits_per_group)
    losses = F.cross_entropy(group_logits.flatten(0, -2).float(), groups.flatten(), reduction="none")
    losses = losses.view(groups.shape).sum(dim=-1) * counted
    if reduction == "none":
        return losses
    return losses.sum() / counted.sum().clamp(min=1)


def backbone_cache_of(output: ModelOutput) -> Cache | None:
    """The KV cache a backbone returned: `cache` in transformers 5, `past_key_values` before (read by key: the old
    attribute warns in 5)."""
    return next((output[key] for key in ("cache", "past_key_values") if key in output.keys()), None)


def group_shifts(num_groups: int, bits_per_group: int, device=None) -> torch.LongTensor:
    """Where each group starts in a code's bits (made where used: a buffer would be lost to meta-device loading)."""
    return torch.arange(num_groups, device=device) * bits_per_group


def split_groups(codes: torch.LongTensor, num_groups: int, bits_per_group: int) -> torch.LongTensor:
    """Codes `(...)` → groups `(..., num_groups)` of `bits_per_group` bits each, lowest bits first."""
    return (codes[..., None] >> group_shifts(num_groups, bits_per_group, codes.device)) & (2**bits_per_group - 1)


def factorized_prior_config(
    vqvae,
    bits_per_group: int,
    num_classes: int = 0,
    conditional_groups: bool = True,
    **settings,
) -> FactorizedPriorConfig:
    """A [`FactorizedPriorConfig`] sized for a binary tokenizer's codes (LFQ, BSQ): `settings` are those of
    [`autoregressive_prior_config`] (`model_type`, `resolution`, `hidden_size`, `num_layers`, `num_heads`, prefix,
    config overrides), which build the backbone. Any other tokenizer is refused: its code ids carry no bits."""
    from ..quantizers.lfq import BinaryQuantizer

    quantizer = getattr(vqvae, "quantize", None)
    if not isinstance(quantizer, BinaryQuantizer):
        raise ValueError(f"a factorised prior needs a binary tokenizer (quantizer_type 'lfq' or 'bsq'), whose code "
                         f"ids are bits; this {type(vqvae).__name__} quantizes with "
                         f"{type(quantizer).__name__}")  # fmt: skip
    stock = autoregressive_prior_config(vqvae, num_classes, **settings)
    vocabulary = CodeVocabulary.from_config(stock)
    codebook_size = vocabulary.codebook_size
    backbone = stock.to_dict()
    for key in ("codebook_size", "num_classes", "code_grid_size", "prefix_vocab_size", "prefix_length", "id2label",
                "label2id", "code_level"):  # fmt: skip
        backbone.pop(key, None)
    backbone.update(vocab_size=vocabulary.vocab_size - codebook_size, bos_token_id=0, eos_token_id=0,
                    pad_token_id=vocabulary.pad_token_id - codebook_size)  # fmt: skip
    labels = {key: getattr(stock, key) for key in ("id2label",) if num_classes and getattr(stock, key, None)}
    return FactorizedPriorConfig(
        backbone=AutoConfig.for_model(**backbone), bits_per_group=bits_per_group,
        conditional_groups=conditional_groups, codebook_size=codebook_size, num_classes=vocabulary.num_classes,
        code_grid_size=list(stock.code_grid_size), prefix_vocab_size=vocabulary.prefix_vocab_size,
        prefix_length=vocabulary.prefix_length, vocab_size=vocabulary.vocab_size,
        bos_token_id=vocabulary.bos_token_id, eos_token_id=vocabulary.bos_token_id,
        pad_token_id=vocabulary.pad_token_id, **labels,
    )  # fmt: skip


AutoConfig.register(FactorizedPriorConfig.model_type, FactorizedPriorConfig)
AutoModelForCausalLM.register(FactorizedPriorConfig, FactorizedCodePrior)
FactorizedPriorConfig.__module__ = FactorizedCodePrior.__module__ = "vq_hub"  # model_index.json: ["vq_hub", …]
