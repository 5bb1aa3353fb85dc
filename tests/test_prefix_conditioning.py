"""Prefix conditioning: condition tokens from a second vocabulary before the condition token (text for DALL-E/MUSE,
a coarser code grid for a hierarchical prior) — the vocabulary, the configs, the loss and both sampling loops."""

import pytest
import torch
from conftest import tiny_vq_config
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

from vq_hub import (
    CodeVocabulary, DiscreteDiffusionScheduler, VQAutoregressivePipeline, VQDiscreteDiffusionPipeline, VQVAEModel,
    autoregressive_prior_config, denoiser_config,
)  # fmt: skip
from vq_hub.models.priors import denoising_loss, next_code_loss

CODEBOOK, PREFIX_VOCAB, PREFIX_LENGTH = 16, 5, 3


def tiny_vqvae() -> VQVAEModel:
    torch.manual_seed(0)
    return VQVAEModel(**tiny_vq_config(num_vq_embeddings=CODEBOOK, sample_size=8)).eval()  # 4×4 grids


def test_prefix_ids_follow_the_class_and_mask_tokens_and_pad_stays_last():
    vocabulary = CodeVocabulary(16, num_classes=3, with_mask_token=True, prefix_vocab_size=5, prefix_length=3)
    assert (vocabulary.bos_token_id, vocabulary.mask_token_id, vocabulary.prefix_offset) == (16, 20, 21)
    assert (vocabulary.pad_token_id, vocabulary.vocab_size, vocabulary.condition_length) == (26, 27, 4)
    # Without a prefix, the layout is the class-conditional one, id for id.
    assert CodeVocabulary(16, 3, True).pad_token_id == 21 and CodeVocabulary(16, 3, True).vocab_size == 22

    tokens, mask = vocabulary.prefix_tokens(torch.tensor([[4, 0, 2], [1, 1, 1]]), torch.tensor([[1, 1, 0], [1, 0, 0]]))
    assert tokens.tolist() == [[25, 21, 26], [22, 26, 26]] and mask.tolist() == [[1, 1, 0], [1, 0, 0]]
    empty, empty_mask = vocabulary.prefix_tokens(None, batch_size=2)
    assert empty.tolist() == [[26] * 3] * 2 and empty_mask.sum() == 0
    start, start_mask = vocabulary.start_tokens(torch.tensor([17, 16]), torch.tensor([[4, 0, 2], [1, 1, 1]]))
    assert start.tolist() == [[25, 21, 23, 17], [22, 22, 22, 16]] and start_mask.tolist() == [[1] * 4] * 2
    # A vocabulary without a prefix starts with the condition token alone.
    assert CodeVocabulary(16, 3).start_tokens(torch.tensor([17]))[0].tolist() == [[17]]


def test_bad_prefixes_are_named():
    vocabulary = CodeVocabulary(16, prefix_vocab_size=5, prefix_length=3)
    cases = [
        (dict(prefix_ids=torch.tensor([[5, 0, 0]])), r"prefix_ids.*\[0, 4\]"),
        (dict(prefix_ids=torch.tensor([[0, 0]])), r"\(B, 3\)"),
        (dict(prefix_ids=torch.zeros(1, 3)), "integer tensor"),
        (dict(prefix_ids=torch.zeros(1, 3, dtype=torch.long), prefix_mask=torch.ones(1, 2)), "prefix_mask"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            vocabulary.prefix_tokens(**kwargs)
    # Ids under mask 0 are never read: a pad id outside the vocabulary is fine there.
    assert vocabulary.prefix_tokens(torch.tensor([[0, 99, 99]]), torch.tensor([[1, 0, 0]]))[0].tolist() == [
        [17, 22, 22]
    ]
    with pytest.raises(ValueError, match="no prefix vocabulary"):
        CodeVocabulary(16).prefix_tokens(torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="both be positive"):
        CodeVocabulary(16, prefix_vocab_size=5)
    with pytest.raises(ValueError, match="pad token"):
        CodeVocabulary(16, with_pad_token=False, prefix_vocab_size=5, prefix_length=3)


def test_configs_record_the_prefix_and_configs_without_one_are_unchanged():
    vqvae = tiny_vqvae()
    plain = autoregressive_prior_config(vqvae, num_classes=3, hidden_size=32, num_layers=2, num_heads=2)
    assert not hasattr(plain, "prefix_vocab_size") and "prefix_length" not in plain.to_dict()
    config = autoregressive_prior_config(vqvae, hidden_size=32, num_layers=2, num_heads=2, prefix_vocab_size=5,
                                         prefix_length=3)  # fmt: skip
    assert (config.vocab_size, config.n_positions, config.pad_token_id) == (23, 3 + 1 + 16, 22)
    assert CodeVocabulary.from_config(config) == CodeVocabulary(16, prefix_vocab_size=5, prefix_length=3)
    denoiser = denoiser_config(vqvae, hidden_size=32, num_layers=2, num_heads=2, prefix_vocab_size=5, prefix_length=3)
    assert CodeVocabulary.from_config(denoiser) == CodeVocabulary(16, 0, True, prefix_vocab_size=5, prefix_length=3)
    assert (denoiser.mask_token_id, denoiser.vocab_size, denoiser.max_position_embeddings) == (17, 24, 20)


def test_next_code_loss_skips_the_prefix():
    tokens = torch.tensor([[22, 22, 30, 16, 3, 7, 1]])  # 3 prefix slots, BOS, 3 codes
    perfect = torch.full((1, 7, 32), -30.0)
    perfect[0, torch.arange(3, 6), tokens[0, 4:]] = 30.0  # the logits at BOS and after predict the codes
    assert next_code_loss(perfect, tokens, 16, prefix_length=3) < 1e-6
    assert next_code_loss(perfect, tokens, 16, prefix_length=3, reduction="none").shape == (1, 3)
    with pytest.raises(ValueError, match="leaves no code"):
        next_code_loss(perfect, tokens, 16, prefix_length=6)


def prefix_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two prefixes (one of them shorter, padded) and the grid each one stands for."""
    prefix_ids = torch.tensor([[1, 2, 3], [4, 0, 0]])
    prefix_mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    grids = torch.randint(0, CODEBOOK, (2, 16), generator=torch.Generator().manual_seed(1))
    return prefix_ids, prefix_mask, grids


def test_a_causal_prior_trained_on_two_prefixes_samples_each_ones_grid():
    vqvae = tiny_vqvae()
    config = autoregressive_prior_config(vqvae, hidden_size=32, num_layers=2, num_heads=2,
                                         prefix_vocab_size=PREFIX_VOCAB, prefix_length=PREFIX_LENGTH)  # fmt: skip
    pipe = VQAutoregressivePipeline(vqvae=vqvae, prior=AutoModelForCausalLM.from_config(config))
    pipe.set_progress_bar_config(disable=True)
    vocabulary = pipe.vocabulary
    prefix_ids, prefix_mask, grids = prefix_batch()
    start, start_mask = vocabulary.start_tokens(torch.full((2,), vocabulary.bos_token_id), prefix_ids, prefix_mask)
    tokens = torch.cat([start, grids], dim=1)
    attention_mask = torch.cat([start_mask, torch.ones_like(grids)], dim=1)
    optimizer = torch.optim.Adam(pipe.prior.parameters(), lr=3e-3)
    pipe.prior.train()
    for _ in range(200):
        logits = pipe.prior(input_ids=tokens, attention_mask=attention_mask).logits
        loss = next_code_loss(logits, tokens, CODEBOOK, prefix_length=PREFIX_LENGTH)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    pipe.prior.eval()
    sampled = pipe.sample_codes(start, start_mask, 2, guided=False, temperature=0.0)
    assert torch.equal(sampled.flatten(1), grids)
    # Batched guidance at scale 1 + ε against the empty prefix follows the prefix.
    empty, empty_mask = vocabulary.start_tokens(torch.full((2,), vocabulary.bos_token_id))
    guided = pipe.sample_codes(torch.cat([start, empty]), torch.cat([start_mask, empty_mask]), 2, guided=True,
                               guidance_scale=1 + 1e-6, temperature=0.0)  # fmt: skip
    assert torch.equal(guided.flatten(1), grids)


def test_a_denoiser_trained_on_two_prefixes_regenerates_each_ones_grid():
    vqvae = tiny_vqvae()
    config = denoiser_config(vqvae, hidden_size=32, num_layers=2, num_heads=2, prefix_vocab_size=PREFIX_VOCAB,
                             prefix_length=PREFIX_LENGTH, hidden_dropout_prob=0.0)  # fmt: skip
    scheduler = DiscreteDiffusionScheduler(20, CODEBOOK, "mask", config.mask_token_id)
    pipe = VQDiscreteDiffusionPipeline(vqvae, AutoModelForMaskedLM.from_config(config), scheduler)
    pipe.set_progress_bar_config(disable=True)
    vocabulary = pipe.vocabulary
    prefix_ids, prefix_mask, grids = prefix_batch()
    start, start_mask = vocabulary.start_tokens(torch.full((2,), vocabulary.bos_token_id), prefix_ids, prefix_mask)
    optimizer = torch.optim.Adam(pipe.denoiser.parameters(), lr=3e-3)
    pipe.denoiser.train()
    for _ in range(250):
        timesteps = torch.randint(1, 21, (16,))
        clean = grids.repeat(8, 1)
        noisy = scheduler.add_noise(clean, timesteps)
        logits = pipe.code_logits(start.repeat(8, 1), start_mask.repeat(8, 1), noisy)
        loss = denoising_loss(logits, clean, noisy, config.mask_token_id)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    pipe.denoiser.eval()
    with torch.no_grad():
        output = pipe.denoise(start, start_mask, 2, guided=False, num_steps=8, temperature=0.0, output_type="codes")
    assert torch.equal(output.codes.flatten(1), grids)
