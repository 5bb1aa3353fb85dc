"""How a training run stops safely: on a non-finite loss, before anything is saved from it (`NonFiniteGuard`), and at
its end, with the process group torn down only once the prepared models are gone (`destroys_process_group_after`)."""

import functools
import gc
from pathlib import Path

import torch
from accelerate import Accelerator

from .training_utils import list_checkpoints


class NonFiniteGuard:
    """Stops every process together on a NaN/inf loss, before anything is saved, without a host sync per step.

    Each micro-step's loss is watched on the device (`watch`: a few kernels, nothing read back); the verdict is read
    once at the steps that read values back anyway — logging, checkpoint and validation steps, and the last one
    (`check_if_due`) — so no checkpoint, validation figure or final model comes from weights a non-finite loss
    reached. The message names the first bad step and its loss terms. (Checking every micro-step, as before, cost a
    gather and a host sync on every step: on a GPU that stalls the launch queue.)
    """

    def __init__(self, accelerator: Accelerator, output_dir: Path, check_every: tuple[int, ...], last_step: int):
        self.accelerator, self.output_dir = accelerator, Path(output_dir)
        self.check_every, self.last_step = tuple(n for n in check_every if n and n > 0), last_step
        # One record per kind of loss watched (a GAN has two): [first bad step or -1, its terms], on the device.
        self.records: dict[tuple[str, ...], list[torch.Tensor]] = {}

    def watch(self, loss: torch.Tensor, terms: dict, step: int) -> None:
        """Remember (on the device) the first step whose `loss` is not finite, with its `terms`."""
        values = torch.stack([value.detach().float().reshape(()) for value in terms.values()])
        record = self.records.setdefault(
            tuple(terms), [torch.full((), -1, dtype=torch.long, device=values.device), torch.zeros_like(values)]
        )
        first_now = ~torch.isfinite(loss.detach()) & (record[0] < 0)
        record[1] = torch.where(first_now, values, record[1])
        record[0] = torch.where(first_now, step, record[0])

    def check_if_due(self, step: int) -> None:
        """`check` at logging, checkpoint and validation steps and at the last step."""
        if step in (1, self.last_step) or any(step % every == 0 for every in self.check_every):
            self.check()

    def check(self) -> None:
        """One gather and one host sync: raise SystemExit on every process if any saw a non-finite loss."""
        never = torch.iinfo(torch.long).max
        firsts = [torch.where(first >= 0, first, never) for first, _ in self.records.values()]
        local = torch.stack(firsts).min() if firsts else torch.tensor(never, device=self.accelerator.device)
        first_bad = min(self.accelerator.gather(local.reshape(1)).tolist())
        if first_bad == never:
            return
        checkpoints = list_checkpoints(self.output_dir)
        last_good = str(checkpoints[-1]) if checkpoints else "none yet"
        values = [f"{name}={value:.4g}" for names, (first, terms) in self.records.items() if int(first) == first_bad
                  for name, value in zip(names, terms.tolist())]  # fmt: skip
        raise SystemExit(
            f"non-finite loss at step {first_bad}{' (' + ', '.join(values) + ')' if values else ''}; training stopped "
            f"before saving anything from it. Last good checkpoint: {last_good}. Lower the learning rate or resume "
            "with --resume_from_checkpoint."
        )


def finish_trackers(accelerator: Accelerator) -> None:
    """The trackers' half of `accelerator.end_training()`; the process group is destroyed by
    `destroys_process_group_after`, once the prepared models are gone."""
    for tracker in accelerator.trackers:
        tracker.finish()


def destroys_process_group_after(train_function):
    """Decorate the function that creates the Accelerator and trains: once it has returned (its prepared models freed
    with its frame, and any left in reference cycles collected here), the process group is destroyed.

    Why not `accelerator.end_training()` inside it (issue 26): that destroys the process group while the DDP model
    still exists, so DDP's `Reducer` holds the last reference to the gloo group. Freeing the model then runs
    `~ProcessGroupGloo` from the Reducer's pybind deallocator, which keeps the GIL while it joins gloo's worker
    threads; a worker still releasing the last barrier's work (which keeps the prior allgather's tensors, with their
    Python objects) waits for the GIL: a deadlock, and one rank never exits. Measured with torch 2.13 (CPU) and
    accelerate 1.16 on a 2-core machine, 4 of 77 two-process launches of train_diffusion.py / train_vqgan.py hung
    (0 of 76 with this decorator); each hung launch had the same py-spy --native stacks — main thread
    `Reducer::~Reducer → ~ProcessGroupGloo → std::thread::join`, a gloo thread `runLoop → ~AsyncBarrierWork →
    ~AsyncAllgatherWork → decref_pyobject → gil_scoped_acquire` (a known class of torch deadlock: pytorch#56297).
    Destroyed after the model, the group's last reference is its Python `ProcessGroup`, whose deallocator releases
    the GIL before the join. On an exception nothing is destroyed (as with Accelerate)."""

    @functools.wraps(train_function)
    def wrapper(*args, **kwargs):
        result = train_function(*args, **kwargs)
        gc.collect()  # a DDP model kept alive only by a reference cycle must not outlive the group
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            from accelerate import PartialState

            PartialState().destroy_process_group()
        return result

    return wrapper
