"""Training at any scale (vq_hub.scaling): the global batch, resuming on another number of processes, gradient
checkpointing, the shipped Accelerate configs and the SLURM script."""

import argparse
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TWO_PROCESS_LAUNCHER, load_example, run_script, tiny_vq_config
from safetensors.torch import load_file

from vq_hub import VQVAEModel, autoregressive_prior_config
from vq_hub.scaling import (
    adapt_to_process_layout, data_position, enable_gradient_checkpointing, resolve_gradient_accumulation,
    write_process_layout,
)  # fmt: skip
from vq_hub.training_utils import EpochSeededSampler

CONFIGS = ROOT / "examples" / "accelerate_configs"


def layout(num_processes: int, train_batch_size: int, accumulation: int) -> dict:
    return {"num_processes": num_processes, "train_batch_size": train_batch_size,
            "gradient_accumulation_steps": accumulation,
            "global_batch_size": num_processes * train_batch_size * accumulation}  # fmt: skip


def test_the_global_batch_sets_the_accumulation_for_any_process_count():
    args = argparse.Namespace(global_batch_size=64, train_batch_size=8, gradient_accumulation_steps=1)
    assert [resolve_gradient_accumulation(args, n) for n in (1, 2, 4, 8)] == [8, 4, 2, 1]
    with pytest.raises(ValueError, match="--global_batch_size 64 must be a positive multiple of --train_batch_size 8"):
        resolve_gradient_accumulation(args, 3)
    with pytest.raises(ValueError, match="--gradient_accumulation_steps 3 contradicts --global_batch_size 64"):
        resolve_gradient_accumulation(argparse.Namespace(**{**vars(args), "gradient_accumulation_steps": 3}), 2)
    without = argparse.Namespace(global_batch_size=None, train_batch_size=8, gradient_accumulation_steps=3)
    assert resolve_gradient_accumulation(without, 2) == 3


def test_every_optimizer_step_sees_the_same_samples_on_one_or_two_processes():
    """The data order of a resumed run: `data_position` with Accelerate's sharding of the seeded shuffle names the
    same samples for each optimizer step, whether 1 process accumulates 4 batches or 2 processes accumulate 2."""
    from accelerate.data_loader import prepare_data_loader

    loader = torch.utils.data.DataLoader(list(range(64)), batch_size=4, sampler=EpochSeededSampler(64, seed=3),
                                         drop_last=True)  # fmt: skip

    def steps_from(step: int, num_processes: int) -> list[list[int]]:
        """The sorted samples of each optimizer step from `step` on (to the end of 2 epochs), resumed there."""
        accumulation = 4 // num_processes
        shards = [prepare_data_loader(loader, num_processes=num_processes, process_index=p, put_on_device=False)
                  for p in range(num_processes)]  # fmt: skip
        steps_per_epoch = len(shards[0]) // accumulation
        epoch, skip = data_position(step, steps_per_epoch, accumulation)
        batches = []
        for shard in shards:
            seen = []
            for e in range(epoch, 2):
                shard.set_epoch(e)
                seen += [b.tolist() for b in shard][skip if e == epoch else 0 :]
            batches.append(seen)
        return [sorted(sum((b[s * accumulation + i] for b in batches for i in range(accumulation)), []))
                for s in range(len(batches[0]) // accumulation)]  # fmt: skip

    assert len(steps_from(0, 1)) == 8
    for step in (0, 3, 4, 5):
        assert steps_from(step, 1) == steps_from(step, 2) == steps_from(0, 1)[step:], step


def make_scheduler(num_processes: int, max_steps: int = 20):
    """The scripts' LR schedule (`make_lr_scheduler`), counted in `num_processes` units per optimizer step."""
    from diffusers.optimization import get_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    optimizer.step()  # as in training, before any scheduler step
    return get_scheduler("cosine", optimizer, num_warmup_steps=4 * num_processes,
                         num_training_steps=max_steps * num_processes)  # fmt: skip


@pytest.mark.parametrize("before, after", [(2, 1), (1, 2), (2, 8)])
@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler.step\(\)`")
def test_a_checkpoint_resumed_on_another_process_count_keeps_the_learning_rate(tmp_path, before, after):
    saved = make_scheduler(before)
    for _ in range(7 * before):  # 7 optimizer steps
        saved.step()
    write_process_layout(tmp_path, layout(before, 8 // before, 1))
    resumed = make_scheduler(after)
    resumed.load_state_dict(saved.state_dict())
    adapt_to_process_layout(tmp_path, layout(after, 8 // after, 1), (resumed,))
    reference = make_scheduler(1)
    for _ in range(7):
        reference.step()
    assert resumed.get_last_lr() == pytest.approx(reference.get_last_lr())
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(reference.get_last_lr()[0])
    for _ in range(after):  # and it goes on in step (Accelerate steps it once per process)
        resumed.step()
    reference.step()
    assert resumed.get_last_lr() == pytest.approx(reference.get_last_lr())


def test_a_checkpoint_of_another_global_batch_is_refused(tmp_path):
    write_process_layout(tmp_path, layout(2, 8, 2))
    with pytest.raises(SystemExit, match=r"global batch of 32 .* this run's is 16 .* Pass --global_batch_size 32"):
        adapt_to_process_layout(tmp_path, layout(1, 8, 2))
    adapt_to_process_layout(tmp_path / "older-checkpoint-without-a-layout", layout(1, 8, 2))  # taken as it is


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    """`--gradient_checkpointing` (train_prior.py's prior, dropout on): each block runs again in the backward pass,
    and the loss and every gradient equal those of the run without it."""
    from transformers import AutoModelForCausalLM

    train_prior = load_example("train_prior")
    args = train_prior.parse_args(["--gradient_checkpointing", "--hidden_size", "32", "--num_layers", "2",
                                   "--num_heads", "2"])  # fmt: skip
    assert args.gradient_checkpointing
    vqvae = VQVAEModel(**tiny_vq_config(sample_size=16))
    config = autoregressive_prior_config(vqvae, num_classes=3, hidden_size=32, num_layers=2, num_heads=2)
    batch = {"codes": torch.randint(0, 32, (4, 64)), "labels": torch.tensor([0, 1, 2, 0])}
    results = []
    for checkpointed in (False, True):
        torch.manual_seed(0)
        prior = AutoModelForCausalLM.from_config(config).train()
        if checkpointed:
            enable_gradient_checkpointing(prior)
        calls = []
        prior.transformer.h[0].ln_1.register_forward_pre_hook(lambda *_: calls.append(1))
        torch.manual_seed(1)
        loss = train_prior.prior_loss(args, prior, batch)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in prior.named_parameters()}, len(calls)))
    (loss, grads, calls), (checkpointed_loss, checkpointed_grads, checkpointed_calls) = results
    assert (calls, checkpointed_calls) == (1, 2), "the checkpointed block runs again in the backward pass"
    torch.testing.assert_close(checkpointed_loss, loss, rtol=0, atol=0)
    for name in grads:
        torch.testing.assert_close(checkpointed_grads[name], grads[name], rtol=1e-5, atol=1e-7, msg=name)


def launch_config(name: str) -> tuple[argparse.Namespace, dict]:
    """What `accelerate launch --config_file examples/accelerate_configs/<name>` makes of the file: its arguments
    and the environment it gives the training processes."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(CONFIGS / name), "examples/train_prior.py"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        return args, prepare_deepspeed_cmd_env(args)[1]
    return args, prepare_multi_gpu_env(args)


def test_the_fsdp_config_shards_each_block_of_the_default_prior(monkeypatch):
    """Accelerate reads the FSDP config as it would launch it (FSDP2, bf16, sharded checkpoints), and its
    auto-wrap policy finds train_prior.py's block class in the default prior."""
    from accelerate import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    from vq_hub import denoiser_config

    args, env = launch_config("fsdp.yaml")
    assert args.use_fsdp and (args.num_processes, args.num_machines, args.mixed_precision) == (8, 1, "bf16")
    for key, value in env.items():
        if key.startswith(("FSDP_", "ACCELERATE_")):
            monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.state_dict_type.name == "SHARDED_STATE_DICT"
    vqvae = VQVAEModel(**tiny_vq_config(sample_size=16))
    prior = AutoModelForCausalLM.from_config(autoregressive_prior_config(vqvae, hidden_size=32, num_layers=2,
                                                                         num_heads=2))  # fmt: skip
    policy = fsdp2_prepare_auto_wrap_policy(plugin, prior)
    assert [type(m).__name__ for m in prior.modules() if policy(m)] == ["GPT2Block", "GPT2Block"]
    # The documented override for train_diffusion.py's denoiser, and the class the diffusion config must name.
    denoiser = AutoModelForMaskedLM.from_config(denoiser_config(vqvae, hidden_size=32, num_layers=2, num_heads=2))
    plugin.transformer_cls_names_to_wrap = ["BertLayer"]
    assert sum(policy(m) for m in denoiser.modules()) == 0
    policy = fsdp2_prepare_auto_wrap_policy(plugin, denoiser)
    assert sum(policy(m) for m in denoiser.modules()) == 2


def test_the_deepspeed_config_is_zero_2_and_takes_the_scripts_accumulation(monkeypatch):
    """The DeepSpeed config as Accelerate launches it: ZeRO stage 2, bf16, clipping at the scripts' default, and
    the accumulation steps left to the script (`auto`). Running it needs the deepspeed package and CUDA."""
    from accelerate.utils import DeepSpeedPlugin

    args, env = launch_config("deepspeed_zero2.yaml")
    assert args.use_deepspeed and (args.num_processes, args.mixed_precision) == (8, "bf16")
    for key, value in env.items():
        if key.startswith("ACCELERATE_"):
            monkeypatch.setenv(key, value)
    plugin = DeepSpeedPlugin()
    assert plugin.deepspeed_config["zero_optimization"]["stage"] == 2
    assert plugin.deepspeed_config["gradient_accumulation_steps"] == "auto"
    assert plugin.deepspeed_config["gradient_clipping"] == 1.0


@pytest.mark.parametrize("name, machines, processes", [("multi_gpu_1x8.yaml", 1, 8), ("multi_gpu_2x8.yaml", 2, 16)])
def test_the_multi_gpu_configs(name, machines, processes):
    args, env = launch_config(name)
    assert args.multi_gpu and (args.num_machines, args.num_processes, args.mixed_precision) == (machines, processes,
                                                                                                "bf16")  # fmt: skip


def test_the_slurm_script_launches_a_command_the_script_parses(monkeypatch):
    """examples/accelerate_configs/slurm_2x8.sh: its `accelerate launch` names a shipped config and a training
    command that the script's parser takes."""
    from test_docs import parse_script

    text = (CONFIGS / "slurm_2x8.sh").read_text()
    assert "#SBATCH --nodes=2" in text and "#SBATCH --ntasks-per-node=1" in text
    command = re.search(r"^SCRIPT=\((.*?)\)$", text, flags=re.M | re.S).group(1)
    words = shlex.split(command.replace("\\\n", " "))
    config = re.search(r"--config_file (\S+)", text).group(1)
    assert (ROOT / config).is_file()
    parse_script(words[0], words[1:], monkeypatch)


# ---------------------------------------------------------------------------------------------- elastic resume runs

TWO = {"launcher": TWO_PROCESS_LAUNCHER, "env": {"ACCELERATE_USE_CPU": "1"}}


def assert_same_weights(expected_file: Path, actual_file: Path, atol: float) -> None:
    expected, actual = load_file(expected_file), load_file(actual_file)
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=atol, msg=key)


def resume_elsewhere(script: str, arguments: list[str], checkpoint: Path, output_dir: Path, **launch):
    """Run `script` from a copy of `checkpoint` in a fresh `output_dir` (its own run: --resume_from_checkpoint
    latest finds that one), with `launch`'s launcher; returns the result."""
    output_dir.mkdir()
    shutil.copytree(checkpoint, output_dir / checkpoint.name)
    return run_script(script, arguments + ["--output_dir", str(output_dir), "--resume_from_checkpoint", "latest"],
                      **launch)  # fmt: skip


@pytest.mark.slow
def test_a_prior_run_moves_from_one_process_to_two_and_back(tmp_path):
    """train_prior.py with `--global_batch_size 16` (accumulation 4 on 1 process, 2 on 2): a 1-process run's step-2
    checkpoint resumed on 2 processes, and that run's step-4 checkpoint resumed on 1, each step seeing the samples of
    the uninterrupted run, whose final weights they reach (dropout off: the random draws are per process). ~2 min
    (3 on a loaded 2-core machine)."""
    encoded = tmp_path / "encoded"
    torch.manual_seed(0)
    vqvae = VQVAEModel(**tiny_vq_config(sample_size=16))
    vqvae.save_pretrained(encoded / "tokenizer")
    codes = write_random_codes(encoded, vqvae)
    config = autoregressive_prior_config(vqvae, num_classes=3, hidden_size=32, num_layers=2, num_heads=2,
                                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)  # fmt: skip
    config.save_pretrained(encoded / "prior-config")
    common = ["--codes_dir", str(codes), "--config_name_or_path", str(encoded / "prior-config"), "--train_batch_size",
              "4", "--global_batch_size", "16", "--class_dropout", "0", "--max_train_steps", "6", "--report_to",
              "none", "--lr_warmup_steps", "2", "--learning_rate", "3e-3", "--checkpointing_steps", "2",
              "--validation_steps", "1000", "--images_per_class", "1"]  # fmt: skip
    reference, two, back = tmp_path / "reference", tmp_path / "on-two", tmp_path / "back-on-one"
    run_script("train_prior.py", common + ["--output_dir", str(reference)])
    # On two processes with --gradient_checkpointing too: the same gradients, so the same weights.
    result = resume_elsewhere("train_prior.py", common + ["--gradient_checkpointing"], reference / "checkpoint-2", two,
                              **TWO)  # fmt: skip
    assert "resumed a 1-process checkpoint on 2 process(es), global batch 16 kept" in result.stdout + result.stderr
    assert json.loads((two / "checkpoint-4" / "process_layout.json").read_text()) == layout(2, 4, 2)
    assert_same_weights(reference / "prior" / "model.safetensors", two / "prior" / "model.safetensors", 1e-5)
    result = resume_elsewhere("train_prior.py", common, two / "checkpoint-4", back)
    assert "resumed a 2-process checkpoint on 1 process(es)" in result.stdout + result.stderr
    assert_same_weights(reference / "prior" / "model.safetensors", back / "prior" / "model.safetensors", 1e-5)
    mismatch = run_script("train_prior.py", common + ["--output_dir", str(back), "--resume_from_checkpoint",
                                                      str(two / "checkpoint-4"), "--global_batch_size", "8"],
                          check=False)  # fmt: skip
    assert mismatch.returncode != 0 and "Pass --global_batch_size 16" in mismatch.stderr


def write_random_codes(folder: Path, vqvae: VQVAEModel) -> Path:
    """An encoded dataset (encode_dataset.py's layout) of 64 random 8×8 code grids in 3 classes, without encoding."""
    from datasets import Dataset

    codes = folder / "codes"
    codes.mkdir()
    generator = torch.Generator().manual_seed(0)
    grids = torch.randint(0, 32, (64, 64), generator=generator)
    grids[:, ::2] = (torch.arange(64) % 3)[:, None]  # something to learn: every other code names the class
    Dataset.from_dict({"codes": grids.short().tolist(), "label": (torch.arange(64) % 3).tolist()}).to_parquet(
        str(codes / "train.parquet")
    )
    info = {"tokenizer": str(folder / "tokenizer"), "code_grid_size": [8, 8], "codebook_size": 32, "resolution": 16,
            "num_classes": 3, "num_examples": {"train": 64}}  # fmt: skip
    (codes / "encoding.json").write_text(json.dumps(info))
    return codes


@pytest.mark.slow
def test_a_tokenizer_run_moves_from_two_processes_to_one_and_back(synthetic_parquet, tmp_path):
    """train_vqgan.py with an EMA codebook and k-means init: a 2-process run (8 images per process) checkpointed at
    step 2 resumes on 1 process (16 per process), whose step-4 checkpoint resumes on 2; the codebook statistics and
    the k-means flag come along (else k-means would run again), and the weights reach the uninterrupted run's."""
    common = [
        "--train_parquet", str(synthetic_parquet / "train.parquet"), "--resolution", "16", "--block_out_channels",
        "16", "32", "--latent_channels", "4", "--norm_num_groups", "8", "--num_vq_embeddings", "32", "--vqvae",
        "--use_ema_codebook", "--kmeans_init", "--dead_code_threshold", "0", "--global_batch_size", "16",
        "--max_train_steps", "6", "--checkpointing_steps", "2", "--validation_steps", "1000", "--report_to", "none",
        "--lr_warmup_steps", "0", "--learning_rate", "1e-3",
    ]  # fmt: skip
    reference, one, back = tmp_path / "reference", tmp_path / "on-one", tmp_path / "back-on-two"
    run_script("train_vqgan.py", common + ["--output_dir", str(reference), "--train_batch_size", "8"], **TWO)
    resume_elsewhere("train_vqgan.py", common + ["--train_batch_size", "16"], reference / "checkpoint-2", one)
    saved = load_file(one / "checkpoint-4" / "model.safetensors")
    assert bool(saved["quantize.initialized"]) and "quantize.ema_embed_sum" in saved
    weights = next(p.name for p in reference.glob("*.safetensors"))
    assert_same_weights(reference / weights, one / weights, atol=1e-4)
    resume_elsewhere("train_vqgan.py", common + ["--train_batch_size", "8"], one / "checkpoint-4", back, **TWO)
    assert_same_weights(reference / weights, back / weights, atol=1e-4)


# Run by torchrun on 2 CPU processes: shards a prior with torch's FSDP2 (`fully_shard`, which runs on gloo; Accelerate
# turns FSDP on only for accelerator devices) and gathers it with `gathered_model`, calling Accelerate's own
# `get_state_dict` through the attributes Accelerate sets under FSDP2.
FSDP2_GATHER = """
import sys, torch, torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import DistributedType, extract_model_from_parallel
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from transformers import GPT2Config, GPT2LMHeadModel
from vq_hub.scaling import gathered_model

class FSDP2Accelerator:
    distributed_type, is_fsdp2, device = DistributedType.FSDP, True, torch.device("cpu")
    get_state_dict, unwrap_model = Accelerator.get_state_dict, staticmethod(extract_model_from_parallel)
    is_main_process = property(lambda self: dist.get_rank() == 0)

dist.init_process_group("gloo")
torch.manual_seed(0)
prior = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=50, n_positions=16))
whole = {name: value.clone() for name, value in prior.state_dict().items()}
mesh = init_device_mesh("cpu", (2,))
for block in prior.transformer.h:
    fully_shard(block, mesh=mesh)
fully_shard(prior, mesh=mesh)
assert prior.transformer.wte.weight.to_local().shape[0] == 25, "each process holds half the rows"
copy = gathered_model(FSDP2Accelerator(), prior)
if dist.get_rank() == 0:
    assert type(copy) is GPT2LMHeadModel and copy.training
    assert copy.state_dict().keys() == whole.keys()
    assert all(torch.equal(copy.state_dict()[name], whole[name]) for name in whole)
    copy.save_pretrained(sys.argv[1])
else:
    assert copy is None
dist.barrier()
print(f"rank {dist.get_rank()} gathered", flush=True)
dist.destroy_process_group()
"""


def test_an_fsdp2_sharded_prior_is_gathered_whole_for_saving(tmp_path):
    """`gathered_model` under FSDP2: the main process gets a plain `GPT2LMHeadModel` with every weight of the
    sharded one, which saves and loads with `from_pretrained`; the other process gets None. ~15 s."""
    import sys

    from conftest import run_command
    from transformers import GPT2LMHeadModel

    script = tmp_path / "fsdp2_gather.py"
    script.write_text(FSDP2_GATHER)
    result = run_command([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(tmp_path / "saved")], timeout=120)  # fmt: skip
    assert "rank 0 gathered" in result.stdout and "rank 1 gathered" in result.stdout
    assert GPT2LMHeadModel.from_pretrained(tmp_path / "saved").config.n_layer == 2


def test_an_ema_of_fsdp_shards_is_refused():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from vq_hub.scaling import check_strategy

    with pytest.raises(SystemExit, match="--use_ema is not supported under FSDP"):
        check_strategy(SimpleNamespace(distributed_type=DistributedType.FSDP), use_ema=True)
    check_strategy(SimpleNamespace(distributed_type=DistributedType.FSDP), use_ema=False)
    check_strategy(SimpleNamespace(distributed_type=DistributedType.MULTI_GPU), use_ema=True)


# Test-only launch wrapper: Accelerate takes its FSDP path only for accelerator devices (its state turns FSDP on in
# the MULTI_GPU/… branch; CPU processes are MULTI_CPU, i.e. DDP over gloo). This makes a CPU run FSDP, with the
# plugin read from the FSDP_* environment, then runs the training script given as its first argument.
FORCE_FSDP_LAUNCH = """
import runpy, sys
from pathlib import Path
import accelerate.state as state
from accelerate import FullyShardedDataParallelPlugin
from accelerate.utils import DistributedType
original = state.AcceleratorState.__init__
def init(self, *args, **kwargs):
    original(self, *args, **kwargs)
    if self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type, self.fsdp_plugin = DistributedType.FSDP, FullyShardedDataParallelPlugin()
        state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP
state.AcceleratorState.__init__ = init
sys.argv = sys.argv[1:]
sys.path.insert(0, str(Path(sys.argv[0]).parent))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_a_prior_trains_under_fsdp2_as_under_ddp_and_resumes_from_sharded_checkpoints(tmp_path):
    """train_prior.py under FSDP2 with the shipped fsdp.yaml's settings (fp32 here) and --gradient_checkpointing, on
    two CPU processes through Accelerate's own FSDP path (forced on: see FORCE_FSDP_LAUNCH): the same weights as
    DDP, sharded checkpoints that resume to the same weights, and a saved pipeline whose prior is whole and loads.
    ~2 minutes."""
    from conftest import run_command

    from vq_hub import VQPipeline

    torch.manual_seed(0)
    vqvae = VQVAEModel(**tiny_vq_config(sample_size=16))
    vqvae.save_pretrained(tmp_path / "tokenizer")
    codes = write_random_codes(tmp_path, vqvae)
    _, config_env = launch_config("fsdp.yaml")
    fsdp_env = {key: value for key, value in config_env.items() if key.startswith("FSDP_")}
    launch = tmp_path / "force_fsdp.py"
    launch.write_text(FORCE_FSDP_LAUNCH)
    common = ["--codes_dir", str(codes), "--hidden_size", "32", "--num_layers", "2", "--num_heads", "2",
              "--train_batch_size", "8", "--report_to", "none", "--lr_warmup_steps", "0", "--images_per_class", "1",
              "--max_train_steps", "4", "--checkpointing_steps", "2", "--validation_steps", "4"]  # fmt: skip

    def fsdp_run(output_dir: Path, *extra: str):
        arguments = [*common, "--gradient_checkpointing", "--output_dir", str(output_dir), *extra]
        return run_command(TWO_PROCESS_LAUNCHER + [str(launch), str(ROOT / "examples" / "train_prior.py"), *arguments],
                           timeout=300, env={"ACCELERATE_USE_CPU": "1", **fsdp_env}, name="FSDP train_prior.py")

    result = fsdp_run(tmp_path / "fsdp")
    assert "Saving FSDP model" in result.stderr
    assert (tmp_path / "fsdp" / "checkpoint-2" / "pytorch_model_fsdp_0").is_dir(), "each process wrote its shard"
    run_script("train_prior.py", common + ["--output_dir", str(tmp_path / "ddp")], **TWO)
    prior = "prior/model.safetensors"
    assert_same_weights(tmp_path / "ddp" / prior, tmp_path / "fsdp" / prior, atol=1e-6)
    (tmp_path / "resumed").mkdir()
    shutil.copytree(tmp_path / "fsdp" / "checkpoint-2", tmp_path / "resumed" / "checkpoint-2")
    fsdp_run(tmp_path / "resumed", "--resume_from_checkpoint", "latest")
    assert_same_weights(tmp_path / "fsdp" / prior, tmp_path / "resumed" / prior, atol=1e-6)
    pipe = VQPipeline.from_pretrained(tmp_path / "fsdp")
    assert pipe.prior.transformer.wte.weight.shape == (pipe.vocabulary.vocab_size, 32)
