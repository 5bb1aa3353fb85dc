"""What only a GPU can show: the CUDA plans give the CPU's answers, the recorded decoding step replays correctly, a
training step reads nothing back, and evaluation leaves the CUDA generators alone. Skipped without CUDA (see
conftest.py); `benchmarks/gpu_check.sh` runs them, with the CUDA cases of tests/test_host_syncs.py (a training step
reads nothing back)."""

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, tiny_vq_config
from test_autoregressive import codes_of, tiny_pipeline

from vq_hub import VQPipeline, VQVAEModel
from vq_hub.evaluation.metrics import kernel_distance
from vq_hub.pipelines import graphed_decoding
from vq_hub.quantizers import nearest_codes

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize("num_vectors, num_codes, dim", [(8192, 16384, 8), (8192, 65536, 64), (1000, 300, 256)])
def test_cuda_search_equals_the_exact_nearest_code(num_vectors, num_codes, dim, normalized):
    generator = torch.Generator().manual_seed(num_codes)
    vectors, codebook = torch.randn(num_vectors, dim, generator=generator), torch.randn(num_codes, dim, generator=generator)
    if normalized:
        vectors, codebook = F.normalize(vectors, dim=1), F.normalize(codebook, dim=1)
    exact = torch.cdist(vectors.double(), codebook.double())
    margin = exact.topk(2, dim=1, largest=False).values.diff(dim=1).squeeze(1)
    expected, clear = exact.argmin(dim=1), margin > 1e-4
    for budget in (None, 2**20):  # one product, and memory-bounded row blocks
        codes = nearest_codes(vectors.to(CUDA), codebook.to(CUDA), normalized=normalized, tile_elements=budget).cpu()
        assert torch.equal(codes[clear], expected[clear])
        assert clear.float().mean() > 0.99


def test_quantizer_codes_under_bf16_autocast_equal_float32_on_cuda():
    model = VQVAEModel(**tiny_vq_config(num_vq_embeddings=1024)).to(CUDA).eval()
    images = torch.rand(64, 3, 16, 16, device=CUDA) * 2 - 1
    latents = model.quant_conv(model.encoder(images))
    expected = model.quantize.latents_to_codes(latents)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        codes = model.quantize.latents_to_codes(latents)
        output = model.quantize(latents)  # eval mode: a training forward would first re-initialise it by k-means
    assert torch.equal(codes, expected) and torch.equal(output.codes, expected)
    assert output.commitment_loss.dtype == torch.float32


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
@pytest.mark.parametrize("generator_device", ["cuda", "cpu"])
def test_recorded_decoding_step_replays_what_the_eager_sampler_samples(monkeypatch, model_type, generator_device):
    recorded = []
    real_record = graphed_decoding.GraphedDecodeStep._record
    monkeypatch.setattr(graphed_decoding.GraphedDecodeStep, "_record",
                        lambda self: recorded.append(1) or real_record(self))  # fmt: skip
    pipe = tiny_pipeline(model_type=model_type, seed=3).to(CUDA)
    calls = [
        lambda: dict(class_labels=[0, 2, 1, 1], temperature=0),
        lambda: dict(class_labels=[0, 1, 2, 0], guidance_scale=3.0, top_k=5, top_p=0.9,
                     generator=torch.Generator(generator_device).manual_seed(2)),
        lambda: dict(prefix_codes=torch.randint(0, 16, (4, 5), generator=torch.Generator().manual_seed(1)),
                     class_labels=[2, 0, 1, 2], generator=torch.Generator(generator_device).manual_seed(3)),
    ]  # fmt: skip
    for arguments in calls:
        pipe.cache_implementation, pipe.cuda_graphs = "static", False
        eager = codes_of(pipe, **arguments())
        pipe.cuda_graphs = True
        assert torch.equal(codes_of(pipe, **arguments()), eager), arguments()
    assert len(recorded) == len(calls)


def test_shipped_pipelines_sample_on_cuda():
    for name in ("fashion-mnist-autoregressive", "fashion-mnist-diffusion"):
        pipe = VQPipeline.from_pretrained(ROOT / "checkpoints" / name).to(CUDA)
        pipe.set_progress_bar_config(disable=True)
        if name.endswith("autoregressive"):
            pipe.cuda_graphs = True
        kwargs = {} if name.endswith("autoregressive") else {"num_steps": 8}
        images = pipe(class_labels=list(range(10)), guidance_scale=2.0, output_type="pt",
                      generator=torch.Generator(CUDA).manual_seed(0), **kwargs).images  # fmt: skip
        assert images.shape == (10, 1, 32, 32) and torch.isfinite(images).all()


def test_evaluation_leaves_the_cuda_generator_alone():
    torch.cuda.manual_seed(1)
    before = torch.cuda.get_rng_state()
    features = torch.randn(64, 8)
    kernel_distance(features, features + 0.5, subset_size=16, subsets=4, seed=7)
    assert torch.equal(torch.cuda.get_rng_state(), before)
