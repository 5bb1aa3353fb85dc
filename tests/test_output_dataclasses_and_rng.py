"""Mixed-precision plumbing that needs no GPU: every output dataclass survives accelerate's fp32 conversion (which
rebuilds it as `type(output)({...})`, the crash of `accelerate launch --mixed_precision bf16` at step 0), and
evaluation never reseeds a generator it does not restore."""

import dataclasses

import pytest
import torch
from accelerate.utils import convert_to_fp32

from conftest import tiny_vq_config
from test_hierarchical_vq_model import tiny_hierarchical_config

from vq_hub import HierarchicalVQModel, VQVAEModel
from vq_hub.codec.api import CodecOutput
from vq_hub.evaluation.classifier import ImageClassifierOutput
from vq_hub.evaluation.metrics import classifier_score, kernel_distance
from vq_hub.models.hierarchical_vq_model import HierarchicalVQModelOutput
from vq_hub.models.vq_model import VQVAEModelOutput
from vq_hub.pipelines.discrete_diffusion import VQDiscreteDiffusionPipelineOutput
from vq_hub.pipelines.hierarchical import VQHierarchicalPipelineOutput
from vq_hub.pipelines.pipeline_vq import VQPipelineOutput
from vq_hub.quantizers.base import QuantizerOutput
from vq_hub.schedulers.scheduling_discrete_diffusion import DiscreteDiffusionSchedulerOutput
from vq_hub.utils.random import seeded_global_rng

OUTPUT_CLASSES = [
    VQVAEModelOutput, HierarchicalVQModelOutput, QuantizerOutput, ImageClassifierOutput, CodecOutput,
    DiscreteDiffusionSchedulerOutput, VQPipelineOutput, VQHierarchicalPipelineOutput, VQDiscreteDiffusionPipelineOutput,
]  # fmt: skip


@pytest.mark.parametrize("output_class", OUTPUT_CLASSES, ids=lambda cls: cls.__name__)
def test_every_output_dataclass_can_be_rebuilt_from_a_dict(output_class):
    """diffusers' BaseOutput convention: every field optional, so `type(out)(dict)` rebuilds the output."""
    values = {field.name: torch.full((2,), float(index), dtype=torch.bfloat16)
              for index, field in enumerate(dataclasses.fields(output_class))}  # fmt: skip
    rebuilt = output_class(values)
    assert list(rebuilt.keys()) == list(values)
    for name, value in values.items():
        assert getattr(rebuilt, name) is value and rebuilt[name] is value


@pytest.mark.parametrize("model_class", [VQVAEModel, HierarchicalVQModel])
def test_model_outputs_survive_accelerates_fp32_conversion(model_class):
    config = tiny_vq_config() if model_class is VQVAEModel else tiny_hierarchical_config()
    model = model_class(**config).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(torch.rand(2, 3, 16, 16) * 2 - 1)
    assert output.sample.dtype == torch.bfloat16
    converted = convert_to_fp32(output)  # what accelerate's prepared forward returns under mixed precision
    assert type(converted) is type(output) and converted.sample.dtype == torch.float32
    assert torch.equal(converted.sample, output.sample.float())
    assert converted.quantizer_loss.dtype == torch.float32


def test_evaluation_draws_reseed_no_cuda_generator_and_restore_the_cpu_stream(monkeypatch):
    """`torch.manual_seed` inside `fork_rng(devices=[])` reseeded every CUDA generator and restored none."""
    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: reseeded.append(seed))
    features = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    reseeded.clear()
    first = kernel_distance(features, features + 0.5, subset_size=16, subsets=4, seed=7)
    score = classifier_score(features, splits=4, seed=7)
    assert torch.equal(torch.rand(3), expected_next), "the global CPU stream is as it was before the metrics"
    assert not reseeded, "no CUDA generator may be reseeded by evaluation"
    assert kernel_distance(features, features + 0.5, subset_size=16, subsets=4, seed=7) == first  # seeded
    assert classifier_score(features, splits=4, seed=7) == score


def test_seeded_global_rng_seeds_and_restores_the_cpu_generator():
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    with seeded_global_rng(11):
        inside = torch.rand(4)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(inside, torch.rand(4, generator=torch.Generator().manual_seed(11)))
