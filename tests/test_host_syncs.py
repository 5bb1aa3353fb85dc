"""No host–device synchronisation inside a training step (issue: GPU as a first-class target).

On a GPU a host sync (`.item()`, `bool(tensor)`, `.tolist()`, a Python comparison with a tensor) stalls the launch
queue until every queued kernel has run. All of them dispatch to `aten._local_scalar_dense`; on CPU the same calls
dispatch there too, so counting that op under a `TorchDispatchMode` proves a step sync-free without a GPU.

The steps below are put together from the same library pieces, in the same order, as the loops of
`examples/train_vqgan.py` and `examples/code_prior_training.py`; the first step of a run (k-means initialisation of the
codebook, which reads its flag once) is taken before counting.
"""

import argparse
import traceback
from functools import partial

import pytest
import torch
from accelerate import Accelerator
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

from conftest import load_example, tiny_vq_config

from vq_hub import PatchDiscriminator, VQVAEModel, autoregressive_prior_config, denoiser_config
from vq_hub.losses import VQGANLoss
from vq_hub.training_guards import NonFiniteGuard
from vq_hub.training_utils import apply_update, make_lr_scheduler, make_optimizer


# The optimizer as `make_optimizer` configures it for CUDA: fused AdamW, whose step counters live beside the weights
# (the CPU default, single-tensor AdamW, keeps them as host scalars and reads them with `.item()`, no device involved).
CUDA = "cuda"


# transformers' own forward reads the first and last input ids back to warn about padding without an attention
# mask (`warn_if_padding_and_no_attention_mask`, once per forward, whenever the config has a pad id: vq_hub's priors
# must have one). Passing the all-ones mask instead moves the read into its mask creation (`fast_all`) and loses SDPA's
# flash path. It is transformers' call, not ours, so it is counted apart and allowed once per forward.
TRANSFORMERS_PADDING_CHECK = "warn_if_padding_and_no_attention_mask"


class HostSyncCounter(TorchDispatchMode):
    """Counts the ops that read a tensor's value back to the host, with where each came from."""

    def __init__(self):
        super().__init__()
        self.places: list[str] = []
        self.transformers_padding_checks = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            place = "".join(traceback.format_stack(limit=8)[:-1])
            if TRANSFORMERS_PADDING_CHECK in place:
                self.transformers_padding_checks += 1
            else:
                self.places.append(place)
        return func(*args, **(kwargs or {}))


def optimization_args(**overrides) -> argparse.Namespace:
    values = dict(adam_weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.99, lr_scheduler="cosine", lr_warmup_steps=2)
    return argparse.Namespace(**{**values, **overrides})


def assert_no_host_sync(step, steps: int = 2, transformers_forwards: int = 0) -> None:
    step(0)  # the first step initialises the codebook by k-means (its flag is read once)
    for index in range(1, steps + 1):
        with HostSyncCounter() as counter:
            step(index)
        assert counter.transformers_padding_checks <= transformers_forwards
        distinct = sorted(set(counter.places), key=counter.places.index)
        assert not distinct, f"{len(counter.places)} host sync(s) in training step {index}, from:\n" + "\n".join(distinct)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """Accelerate keeps one process-wide state: an Accelerator made by an earlier test (other precision) would refuse
    `mixed_precision="bf16"` here. Start and leave each test with none."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.mark.parametrize("device", DEVICES)
def test_tokenizer_training_step_with_gan_and_restarts_has_no_host_sync(tmp_path, device):
    """A VQ-GAN step in bf16 autocast: the healthy quantizer recipe (k-means init, dead-code restarts, usage
    statistics), the adaptive GAN weight and the discriminator's own update, EMA of nothing, the NaN guard."""
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision="bf16")
    args = optimization_args()
    model = VQVAEModel(**tiny_vq_config(dead_code_threshold=1e6))  # restarts every code every step: the worst case
    discriminator = PatchDiscriminator(in_channels=3, base_channels=8, num_layers=1)
    optimizer = make_optimizer(args, model, 1e-3, CUDA)
    d_optimizer = make_optimizer(args, discriminator, 1e-3, CUDA)
    schedulers = [make_lr_scheduler(args, o, accelerator, 10) for o in (optimizer, d_optimizer)]
    model, discriminator, optimizer, d_optimizer, scheduler, d_scheduler = accelerator.prepare(
        model, discriminator, optimizer, d_optimizer, *schedulers
    )
    loss_fn = VQGANLoss(discriminator=accelerator.unwrap_model(discriminator), discriminator_weight=0.1,
                        discriminator_start=0)  # fmt: skip
    last_layer = accelerator.unwrap_model(model).decoder.conv_out.weight
    guard = NonFiniteGuard(accelerator, tmp_path, (50, 500, 500), 1000)
    images = (torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(accelerator.device)
    model.train()

    def step(index: int) -> None:
        with accelerator.accumulate(model, discriminator):
            output = model(images)
            loss, terms = loss_fn.generator_loss(images, output.sample, output.quantizer_loss, last_layer, index)
            apply_update(accelerator, loss, terms, model, optimizer, scheduler, 1.0, index, guard)
            d_loss, d_terms = loss_fn.discriminator_loss(discriminator, images, output.sample)
            apply_update(accelerator, d_loss, d_terms, discriminator, d_optimizer, d_scheduler, 1.0, index, guard)

    assert_no_host_sync(step)
    assert int(accelerator.unwrap_model(model).quantize.num_restarts) > 0  # the restart path did run


def prior_training_step(example: str, config, auto_class, tmp_path, device: str = "cpu"):
    module = load_example(example)
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision="bf16")
    args = optimization_args(class_dropout=0.1, prompt_dropout=0.0, corruption="mask", num_train_timesteps=100,
                             schedule="cosine")  # fmt: skip
    prior = auto_class.from_config(config)
    optimizer = make_optimizer(args, prior, 1e-3, CUDA)
    prior, optimizer, scheduler = accelerator.prepare(prior, optimizer, make_lr_scheduler(args, optimizer, accelerator,
                                                                                         10))  # fmt: skip
    loss_fn = partial(module.prior_loss if example == "train_prior" else module.diffusion_loss, args)
    guard = NonFiniteGuard(accelerator, tmp_path, (50,), 1000)
    generator = torch.Generator().manual_seed(0)
    batch = {"codes": torch.randint(0, 32, (4, 64), generator=generator), "labels": torch.tensor([0, 1, 2, -1])}
    batch = {name: value.to(accelerator.device) for name, value in batch.items()}
    prior.train()

    def step(index: int) -> None:
        with accelerator.accumulate(prior):
            loss = loss_fn(prior, batch)
            apply_update(accelerator, loss, {"loss": loss}, prior, optimizer, scheduler, 1.0, index, guard)

    return step


@pytest.mark.parametrize("device", DEVICES)
def test_autoregressive_prior_training_step_has_no_host_sync(tmp_path, device):
    vqvae = VQVAEModel(**tiny_vq_config())
    config = autoregressive_prior_config(vqvae, num_classes=3, hidden_size=32, num_layers=2, num_heads=2)
    assert_no_host_sync(prior_training_step("train_prior", config, AutoModelForCausalLM, tmp_path, device), transformers_forwards=1)


@pytest.mark.parametrize("device", DEVICES)
def test_diffusion_prior_training_step_has_no_host_sync(tmp_path, device):
    vqvae = VQVAEModel(**tiny_vq_config())
    config = denoiser_config(vqvae, num_classes=3, hidden_size=32, num_layers=2, num_heads=2)
    assert_no_host_sync(prior_training_step("train_diffusion", config, AutoModelForMaskedLM, tmp_path, device),
                        transformers_forwards=1)


def test_non_finite_guard_reads_back_only_when_checked(tmp_path):
    accelerator = Accelerator(cpu=True)
    guard = NonFiniteGuard(accelerator, tmp_path, (5,), 100)
    with HostSyncCounter() as counter:
        guard.watch(torch.tensor(1.0), {"loss": torch.tensor(1.0)}, step=1)
        guard.watch(torch.tensor(float("nan")), {"loss": torch.tensor(float("nan")), "kl": torch.tensor(2.0)}, 2)
        guard.watch(torch.tensor(float("inf")), {"loss": torch.tensor(float("inf")), "kl": torch.tensor(3.0)}, 3)
        guard.check_if_due(4)  # not a checking step
    assert not counter.places
    try:
        guard.check_if_due(5)
    except SystemExit as stop:
        message = str(stop)
    else:
        raise AssertionError("the guard let a NaN loss through")
    assert message.startswith("non-finite loss at step 2 (loss=nan, kl=2)")
    assert "Last good checkpoint: none yet" in message
