"""Pieces the training scripts share: secrets kept out of records, weight-decay groups, fresh optimizer state for
restarted codes, per-process randomness and the finished-run guard."""

import argparse
import json
import os
import subprocess

import pytest
import torch
from conftest import ROOT, TWO_PROCESS_LAUNCHER, run_command, tiny_vq_config
from transformers import AutoModelForCausalLM

from vq_hub import VQVAEModel, autoregressive_prior_config
from vq_hub.quantizers import VectorQuantizer
from vq_hub.training_utils import (
    REDACTED, finished_summary, public_arguments, reset_restarted_codes, training_command, weight_decay_groups,
)  # fmt: skip


def test_secrets_are_redacted_from_commands_and_recorded_arguments():
    argv = ["--output_dir", "out", "--hub_token", "hf_SECRET", "--push_to_hub", "--hub_token=hf_OTHER"]
    command = training_command("train_prior.py", argv)
    assert "hf_SECRET" not in command and "hf_OTHER" not in command
    assert command.endswith(f"--output_dir out --hub_token {REDACTED} --push_to_hub --hub_token={REDACTED}")
    args = argparse.Namespace(hub_token="hf_SECRET", output_dir="out", hub_model_id=None)
    assert public_arguments(args) == {"hub_token": REDACTED, "output_dir": "out", "hub_model_id": None}
    assert public_arguments(argparse.Namespace(hub_token=None)) == {"hub_token": None}


def names_in(groups, model) -> tuple[set, set]:
    names = {id(p): n for n, p in model.named_parameters()}
    decayed, not_decayed = ({names[id(p)] for p in group["params"]} for group in groups)
    return decayed, not_decayed


def test_weight_decay_skips_codebooks_embeddings_norms_and_biases():
    model = VQVAEModel(**tiny_vq_config(codebook_dim=2))
    groups = weight_decay_groups(model, 0.05)
    assert [group["weight_decay"] for group in groups] == [0.05, 0.0]
    decayed, not_decayed = names_in(groups, model)
    assert decayed | not_decayed == {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"quantize.embedding.weight", "encoder.conv_in.bias", "encoder.conv_norm_out.weight"} <= not_decayed
    assert {"encoder.conv_in.weight", "quant_conv.weight", "quantize.project_in.weight"} <= decayed

    prior = AutoModelForCausalLM.from_config(autoregressive_prior_config(model, 3, hidden_size=32, num_layers=1,
                                                                         num_heads=2))  # fmt: skip
    decayed, not_decayed = names_in(weight_decay_groups(prior, 0.1), prior)
    # GPT-2's lm_head is tied to wte: an embedding, not decayed.
    assert {"transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.ln_1.weight"} <= not_decayed
    assert {"transformer.h.0.attn.c_attn.weight", "transformer.h.0.mlp.c_fc.weight"} <= decayed
    assert not any(name.endswith("bias") for name in decayed)


def test_restarted_codes_get_the_gradient_of_their_new_vectors_only():
    """A code restarted in a forward receives this step's gradient for what it is now, not its predecessor's."""
    quantizer = VectorQuantizer(8, 4, dead_code_threshold=0.5).train()
    latents = torch.randn(2, 4, 3, 3)
    quantizer.embedding.weight.data = 10 + torch.randn(8, 4)
    quantizer.embedding.weight.data[3] = 0.0  # the old code 3 is nearest to every latent of this batch…
    quantizer.ema_cluster_size.fill_(1.0)
    quantizer.ema_cluster_size[3] = 0.1  # …but its usage history says it is dead
    quantizer(latents).codebook_loss.backward()
    assert int(quantizer.num_restarts) == 1

    reference = VectorQuantizer(8, 4).train()  # the restarted codebook, no restarts: the gradient it should get
    reference.embedding.weight.data.copy_(quantizer.embedding.weight.detach())
    reference(latents).codebook_loss.backward()
    torch.testing.assert_close(quantizer.embedding.weight.grad, reference.embedding.weight.grad)


def test_restarted_codes_start_with_fresh_optimizer_moments():
    quantizer = VectorQuantizer(8, 4, dead_code_threshold=0.5).train()
    optimizer = torch.optim.Adam(quantizer.parameters(), lr=1e-2)
    latents = torch.randn(2, 4, 3, 3)
    quantizer(latents).codebook_loss.backward()  # a first step fills Adam's moments of every used code
    reset_restarted_codes(optimizer, quantizer)
    optimizer.step()
    optimizer.zero_grad()
    state = optimizer.state[quantizer.embedding.weight]
    quantizer.ema_cluster_size[:] = 1.0
    quantizer.ema_cluster_size[[2, 5]] = 0.0  # two dead codes, restarted in the next forward
    state["exp_avg"][[2, 5]] = 7.0  # stale momentum of their predecessors
    quantizer(latents).codebook_loss.backward()
    grad = quantizer.embedding.weight.grad.clone()
    reset_restarted_codes(optimizer, quantizer)
    optimizer.step()
    torch.testing.assert_close(state["exp_avg"][[2, 5]], 0.1 * grad[[2, 5]])  # (1 - β1)·g: nothing inherited
    assert quantizer.pop_restarted_codes() is None


def test_a_finished_run_is_recognised_only_with_its_saved_summary(tmp_path):
    from accelerate import PartialState

    PartialState()  # the scripts' logger needs Accelerate's state, as in a launched script
    assert finished_summary(tmp_path, 10, 10) is None  # no final save yet: the script goes on to save it
    (tmp_path / "training_summary.json").write_text(json.dumps({"steps": 10}))
    assert finished_summary(tmp_path, 9, 10) is None
    assert finished_summary(tmp_path, 10, 10) == {"steps": 10}


SEEDING_SCRIPT = """
import json, sys, torch
from vq_hub.training_utils import resume_or_seed, start_training
import argparse
args = argparse.Namespace(output_dir=sys.argv[1], gradient_accumulation_steps=1, mixed_precision="no",
                          report_to="none", logging_dir="logs", seed=3)
accelerator = start_training(args)
init = torch.nn.Linear(4, 4).weight.sum().item()          # model initialisation: the shared seed
resume_or_seed(accelerator, args.output_dir, None, args.seed)
draws = torch.rand(3).tolist()                              # flips, timesteps, masks, class dropout
with open(f"{sys.argv[1]}/rank{accelerator.process_index}.json", "w") as f:
    json.dump({"init": init, "draws": draws}, f)
"""


@pytest.mark.slow
def test_ranks_share_the_model_initialisation_but_not_the_per_sample_randomness(tmp_path):
    script = tmp_path / "seeding.py"
    script.write_text(SEEDING_SCRIPT)
    result = subprocess.run(TWO_PROCESS_LAUNCHER + [str(script), str(tmp_path)], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "ACCELERATE_USE_CPU": "1"}, cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1))
    assert rank0["init"] == rank1["init"]
    assert rank0["draws"] != rank1["draws"]


def test_checkpoints_total_limit_keeps_the_newest_and_zero_is_refused(tmp_path):
    """`[:-0]` once deleted nothing: a limit of 0 kept every checkpoint. Now ≥ 1 keeps that many, 0 is refused."""
    from accelerate import Accelerator

    from vq_hub.training_utils import add_output_arguments, list_checkpoints, save_checkpoint

    accelerator = Accelerator(cpu=True)
    for step in (1, 2, 3):
        save_checkpoint(accelerator, tmp_path, step, total_limit=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-3"]
    with pytest.raises(ValueError, match="total_limit"):
        save_checkpoint(accelerator, tmp_path, 4, total_limit=0)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-3"]  # refused before saving
    parser = argparse.ArgumentParser()
    add_output_arguments(parser, "out")
    with pytest.raises(SystemExit):
        parser.parse_args(["--checkpoints_total_limit", "0"])
    assert parser.parse_args(["--checkpoints_total_limit", "1"]).checkpoints_total_limit == 1


def test_a_hung_script_run_fails_the_test_and_leaves_no_process_behind():
    """conftest's run limit: no retry; past its time limit a run fails the test and its whole process tree is killed
    (torchrun starts each rank in a session of its own, so killing the launcher alone would leave a hung rank)."""
    import sys
    import time

    import psutil

    sleeper = ("import subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', 'import time; "
               "time.sleep(600)'], start_new_session=True); print(child.pid, flush=True); time.sleep(600)")  # fmt: skip
    with pytest.raises(pytest.fail.Exception, match="sleeper hung: no exit after 3 s") as failure:
        run_command([sys.executable, "-c", sleeper], timeout=3, name="sleeper")
    grandchild = int(str(failure.value).split("--- stdout ---\n")[1].split()[0])
    for _ in range(50):
        if not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"process {grandchild} of the hung run is still running")
