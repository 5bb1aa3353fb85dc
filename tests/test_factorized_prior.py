"""The factorised prior over binary codes: per-group embeddings and heads, its loss, sampling through the
autoregressive pipeline, save/load, and what it refuses."""

import json

import pytest
import torch
from conftest import load_example, tiny_vq_config
from transformers import AutoModelForCausalLM

from vq_hub import (
    FactorizedCodePrior, FactorizedPriorConfig, VQAutoregressivePipeline, VQPipeline, VQVAEModel,
    factorized_prior_config,
)  # fmt: skip
from vq_hub.models.factorized_prior import factorized_code_loss

BITS, CLASSES = 10, 3


def lfq_tokenizer(bits: int = BITS, quantizer_type: str = "lfq") -> VQVAEModel:
    """8×8 images → 4×4 grids of 2^bits binary codes."""
    return VQVAEModel(**tiny_vq_config(num_vq_embeddings=2**bits, sample_size=8, quantizer_type=quantizer_type)).eval()


def tiny_prior(bits: int = BITS, bits_per_group: int = 5, conditional: bool = True, model_type: str = "gpt2",
               num_classes: int = CLASSES, seed: int = 0) -> FactorizedCodePrior:  # fmt: skip
    torch.manual_seed(seed)
    config = factorized_prior_config(lfq_tokenizer(bits), bits_per_group, num_classes, conditional_groups=conditional,
                                     model_type=model_type, hidden_size=32, num_layers=2, num_heads=2)  # fmt: skip
    return AutoModelForCausalLM.from_config(config).eval()


def tiny_pipeline(**kwargs) -> VQAutoregressivePipeline:
    prior = tiny_prior(**kwargs)
    torch.manual_seed(1)
    pipe = VQAutoregressivePipeline(vqvae=lfq_tokenizer(prior.config.bits), prior=prior)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def pipe() -> VQAutoregressivePipeline:
    return tiny_pipeline()


# ------------------------------------------------------------------------------------------------- the model


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_shapes_parameters_and_the_vocabulary_of_a_stock_prior(model_type):
    prior = tiny_prior(model_type=model_type)
    assert isinstance(prior, FactorizedCodePrior) and prior.config.num_groups == 2 and prior.config.group_size == 32
    assert (prior.config.vocab_size, prior.config.backbone.vocab_size) == (2**BITS + 1 + CLASSES + 1, 5)
    assert prior.vocabulary == VQAutoregressivePipeline(vqvae=lfq_tokenizer(), prior=prior).vocabulary
    ids = torch.tensor([[2**BITS + 1, 3, 1000, 5], [2**BITS, 7, 8, 1023]])
    output = prior(input_ids=ids)
    assert output.group_logits.shape == (2, 4, 2, 32) and output.last_hidden_state.shape == (2, 4, 32)
    # No table or head grows with the 1,024 codes: the largest tensor is the head's hidden × 2·hidden MLP.
    assert max(p.numel() for p in prior.parameters()) < 2**BITS * 32
    codes = torch.tensor([0, 1, 31, 32, 1023, 700])
    assert torch.equal(prior.join_groups(prior.split_groups(codes)), codes)
    assert prior.split_groups(torch.tensor(700)).tolist() == [700 % 32, 700 // 32]


@pytest.mark.parametrize("conditional", [True, False])
def test_the_loss_is_the_sum_of_group_cross_entropies_and_a_normalised_code_nll(conditional):
    """By hand on 4-bit codes in groups of 2: the loss sums each group's −log softmax, and the code probabilities
    it implies (every one of the 16 next codes teacher-forced in turn) sum to one."""
    prior = tiny_prior(bits=4, bits_per_group=2, conditional=conditional)
    ids = torch.tensor([[16, 9, 14, 3]])  # BOS, then codes 9 = (1, 2), 14 = (2, 3), 3 = (3, 0) in groups (low, high)
    output = prior(input_ids=ids, labels=ids)
    logp = output.group_logits.log_softmax(-1)
    by_hand = -torch.stack([logp[0, 0, 0, 1] + logp[0, 0, 1, 2], logp[0, 1, 0, 2] + logp[0, 1, 1, 3],
                            logp[0, 2, 0, 3] + logp[0, 2, 1, 0]])  # fmt: skip
    torch.testing.assert_close(factorized_code_loss(output.group_logits[:, :-1], ids[:, 1:], 16, 2,
                                                    reduction="none")[0], by_hand)  # fmt: skip
    torch.testing.assert_close(output.loss, by_hand.mean())

    nll = []
    for code in range(16):
        logits = prior(input_ids=torch.tensor([[16, 9, code]])).group_logits[0, 1]
        nll.append(factorized_code_loss(logits[None, None], torch.tensor([[code]]), 16, 2)[()])
    torch.testing.assert_close(torch.logsumexp(-torch.stack(nll), 0), torch.tensor(0.0), atol=1e-5, rtol=0)
    # Only the conditional prior's second group depends on the first group of the code it predicts.
    second = torch.stack([prior(input_ids=torch.tensor([[16, 9, c]])).group_logits[0, 1, 1] for c in (0, 1)])
    assert torch.allclose(second[0], second[1]) is not conditional


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="`bits_per_group` 3 must divide the code's 10 bits"):
        factorized_prior_config(lfq_tokenizer(), 3)
    with pytest.raises(ValueError, match="power of two"):
        FactorizedPriorConfig(codebook_size=1000, bits_per_group=5)
    with pytest.raises(ValueError, match="needs a binary tokenizer .* VectorQuantizer"):
        factorized_prior_config(VQVAEModel(**tiny_vq_config(num_vq_embeddings=1024, sample_size=8)), 5)
    factorized_prior_config(lfq_tokenizer(quantizer_type="bsq"), 2)  # BSQ codes are bits too


# ------------------------------------------------------------------------------------------------- sampling


def test_sampling_is_reproducible_and_gives_only_codes(pipe):
    first = pipe(batch_size=3, class_labels=[0, 1, 2], generator=seeded(0), output_type="codes").codes
    again = pipe(batch_size=3, class_labels=[0, 1, 2], generator=seeded(0), output_type="codes").codes
    assert first.shape == (3, 4, 4) and torch.equal(first, again)
    assert 0 <= first.min() and first.max() < 2**BITS and first.unique().numel() > 8
    rows = pipe(class_labels=[2, 0], generator=[seeded(0), seeded(1)], output_type="codes").codes
    assert torch.equal(rows[:1], pipe(class_labels=[2], generator=seeded(0), output_type="codes").codes)


def test_guidance_top_k_top_p_completion_and_images(pipe):
    call = dict(class_labels=[0, 1], output_type="codes", top_k=3, top_p=0.9)
    guided = pipe(guidance_scale=3.0, generator=seeded(2), **call).codes
    assert not torch.equal(guided, pipe(generator=seeded(2), **call).codes)
    assert torch.equal(guided, pipe(guidance_scale=3.0, generator=seeded(2), **call).codes)
    greedy = pipe(class_labels=[1], temperature=0, output_type="codes").codes
    assert torch.equal(greedy, pipe(class_labels=[1], temperature=0, top_k=2, output_type="codes").codes)
    prefix = torch.tensor([[5, 1000, 77, 1023, 0], [1, 2, 3, 4, 6]])
    completed = pipe(prefix_codes=prefix, generator=seeded(3), output_type="codes").codes
    assert torch.equal(completed.flatten(1)[:, :5], prefix)
    images = pipe(batch_size=2, generator=seeded(4), output_type="pt").images
    assert images.shape == (2, 3, 8, 8)


def test_the_sampler_draws_the_code_the_prior_learned():
    """Every training grid starts with code 700 = groups (28, 21): greedy sampling must join the groups back."""
    pipe = tiny_pipeline(seed=4)
    prior = pipe.prior.train()
    codes = torch.randint(0, 2**BITS, (16, 16), generator=seeded(5))
    codes[:, 0] = 700
    tokens = torch.cat([torch.full((16, 1), 2**BITS), codes], dim=1)
    optimizer = torch.optim.Adam(prior.parameters(), lr=1e-2)
    for _ in range(40):
        optimizer.zero_grad()
        prior(input_ids=tokens, labels=tokens).loss.backward()
        optimizer.step()
    prior.eval()
    assert pipe(batch_size=2, temperature=0, output_type="codes").codes[:, 0, 0].tolist() == [700, 700]


def test_cuda_graphs_are_refused_clearly(pipe):
    assert not pipe.supports_cuda_graphs
    pipe.cuda_graphs = True
    try:
        with pytest.raises(ValueError, match="cannot record the decoding step of a FactorizedCodePrior"):
            pipe(output_type="codes")
    finally:
        pipe.cuda_graphs = False


# ------------------------------------------------------------------------------------------------- save / load


def test_the_pipeline_saves_and_loads_the_prior(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["prior"] == ["vq_hub", "FactorizedCodePrior"]
    loaded = VQPipeline.from_pretrained(tmp_path)
    assert isinstance(loaded.prior, FactorizedCodePrior) and loaded.prior.config.bits_per_group == 5
    loaded.set_progress_bar_config(disable=True)
    call = dict(class_labels=[0, 2], guidance_scale=2.0, generator=seeded(6), output_type="codes")
    assert torch.equal(loaded(**call).codes, pipe(**{**call, "generator": seeded(6)}).codes)


# ------------------------------------------------------------------------------------------------- training


def test_train_prior_trains_and_saves_a_factorized_prior(synthetic_parquet, tmp_path):
    """examples/train_prior.py --bits_per_group on the codes of a tiny LFQ tokenizer (16×16 → 8×8 codes of 2^6)."""
    torch.manual_seed(0)
    VQVAEModel(**tiny_vq_config(num_vq_embeddings=64, sample_size=16, quantizer_type="lfq")).save_pretrained(
        tmp_path / "tokenizer")  # fmt: skip
    load_example("encode_dataset").main([
        "--vqvae_name_or_path", str(tmp_path / "tokenizer"), "--train_parquet", str(synthetic_parquet / "train.parquet"),
        "--validation_parquet", str(synthetic_parquet / "test.parquet"), "--batch_size", "32",
        "--output_dir", str(tmp_path / "codes"),
    ])  # fmt: skip
    train_prior = load_example("train_prior")
    summary = train_prior.main([
        "--codes_dir", str(tmp_path / "codes"), "--output_dir", str(tmp_path / "prior"), "--bits_per_group", "3",
        "--max_train_steps", "3", "--hidden_size", "32", "--num_layers", "1", "--num_heads", "2",
        "--train_batch_size", "8", "--report_to", "none", "--lr_warmup_steps", "0", "--images_per_class", "1",
    ])  # fmt: skip
    # The summed group cross-entropies of an untrained prior: about ln(64) nats per code.
    assert 3.5 < summary["validation"]["loss"] < 5.0, summary["validation"]
    pipe = VQPipeline.from_pretrained(tmp_path / "prior")
    assert isinstance(pipe.prior, FactorizedCodePrior) and pipe.prior.config.num_groups == 2
    assert pipe(class_labels=[1], generator=seeded(0), output_type="codes").codes.max() < 64

    args = train_prior.parse_args(["--bits_per_group", "3"])
    vector = VQVAEModel(**tiny_vq_config(num_vq_embeddings=64, sample_size=16))
    info = {"num_classes": 3, "resolution": 16, "code_grid_size": [8, 8], "codebook_size": 64}
    with pytest.raises(SystemExit, match="--bits_per_group 3: a factorised prior needs a binary tokenizer"):
        train_prior.build_prior(args, vector, info)
    with pytest.raises(SystemExit):
        train_prior.parse_args(["--independent_groups"])


def test_gradient_checkpointing_recomputes_the_backbone_and_keeps_the_gradients():
    """`--gradient_checkpointing` with `--bits_per_group`: the backbone's blocks run again in the backward pass and
    every gradient equals the run without it (dropout off, so both runs draw nothing)."""
    from vq_hub.scaling import enable_gradient_checkpointing

    ids = torch.tensor([[2**BITS + 1, 3, 1000, 5, 77], [2**BITS, 7, 8, 1023, 512]])
    results = []
    for checkpointed in (False, True):
        prior = tiny_prior(seed=3).train()
        for module in prior.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        if checkpointed:
            enable_gradient_checkpointing(prior)
        calls = []
        prior.backbone.h[0].ln_1.register_forward_pre_hook(lambda *_: calls.append(1))
        prior(input_ids=ids).group_logits.square().sum().backward()
        results.append(({n: p.grad.clone() for n, p in prior.named_parameters() if p.grad is not None}, len(calls)))
    (grads, calls), (checkpointed_grads, checkpointed_calls) = results
    assert (calls, checkpointed_calls) == (1, 2) and grads.keys() == checkpointed_grads.keys()
    for name in grads:
        torch.testing.assert_close(checkpointed_grads[name], grads[name], rtol=1e-5, atol=1e-7, msg=name)
