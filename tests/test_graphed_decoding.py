"""CUDA-graph autoregressive sampling (`pipe.cuda_graphs = True`): the recorded step samples exactly what the eager
static-cache sampler samples, and never reads a value back to the host (which a CUDA graph capture refuses).

Off CUDA the pipeline runs the very step it would record, without recording it: what is checked here. The capture
and replay themselves are checked on a GPU (`-m gpu`, run by benchmarks/gpu_check.sh)."""

import pytest
import torch
from test_autoregressive import CODEBOOK, codes_of, seeded, tiny_pipeline
from test_host_syncs import HostSyncCounter

from vq_hub.pipelines import graphed_decoding

CALLS = {  # fresh generators for each run
    "greedy": lambda prefix: dict(class_labels=[0, 2], temperature=0),
    "per-row generators, top-k": lambda prefix: dict(class_labels=[1, 2], top_k=5, generator=[seeded(0), seeded(1)]),
    "guided, top-p": lambda prefix: dict(class_labels=[0, 1], guidance_scale=3.0, top_p=0.8, generator=seeded(2)),
    "completion": lambda prefix: dict(prefix_codes=prefix, class_labels=[2, 0], generator=seeded(3)),
    "guided greedy": lambda prefix: dict(class_labels=[2, 1], guidance_scale=2.0, temperature=0),
}


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
@pytest.mark.parametrize("call", list(CALLS))
def test_graphed_step_samples_what_the_eager_sampler_samples(model_type, call):
    pipe = tiny_pipeline(model_type=model_type, seed=3)
    prefix = torch.randint(0, CODEBOOK, (2, 5), generator=seeded(9))
    pipe.cache_implementation = "static"
    eager = codes_of(pipe, **CALLS[call](prefix))
    pipe.cuda_graphs = True
    graphed = codes_of(pipe, **CALLS[call](prefix))
    assert torch.equal(graphed, eager)
    pipe.cache_implementation = "dynamic"  # cuda_graphs brings its own static cache
    assert torch.equal(codes_of(pipe, **CALLS[call](prefix)), eager)


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_the_recorded_step_never_reads_back_to_the_host(monkeypatch, model_type):
    """Every run of the step after the prefill is counted: no `.item()`, `bool(tensor)` or `.tolist()` inside."""
    counters, runs = [], []
    real_step = graphed_decoding.GraphedDecodeStep.step

    def counted_step(self):
        with HostSyncCounter() as counter:
            output = real_step(self)
        counters.append(counter)
        return output

    monkeypatch.setattr(graphed_decoding.GraphedDecodeStep, "step", counted_step)
    pipe = tiny_pipeline(model_type=model_type, seed=3)
    pipe.cuda_graphs = True
    codes_of(pipe, class_labels=[0, 1], guidance_scale=2.0, top_k=4, top_p=0.9, generator=seeded(1))
    assert len(counters) == 15  # 16 codes: the first comes from the prefill
    reads = [place for counter in counters for place in counter.places]
    padding_checks = sum(counter.transformers_padding_checks for counter in counters)
    assert not reads and padding_checks == 0, reads[:1]


def test_cache_counters_are_the_write_positions_of_a_static_cache():
    from transformers import StaticCache

    pipe = tiny_pipeline(seed=3)
    cache = StaticCache(config=pipe.prior.config, max_cache_len=20)
    pipe.prior(input_ids=torch.zeros(2, 3, dtype=torch.long), attention_mask=torch.ones(2, 20, dtype=torch.long),
               use_cache=True, cache=cache)  # fmt: skip
    counters = graphed_decoding.cache_counters(cache)
    assert len(counters) == pipe.prior.config.num_hidden_layers
    assert [int(counter) for counter in counters] == [3, 3]
