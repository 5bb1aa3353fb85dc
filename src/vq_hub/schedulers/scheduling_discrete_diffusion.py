"""Discrete diffusion over code grids: corrupt a growing fraction of codes (training), undo it step by step (sampling).

Timesteps run from 1 (almost clean) to `num_train_timesteps` = T (every code corrupted); timestep t corrupts
`round(γ(t/T)·n)` of the n free codes of a grid, exactly, at positions drawn uniformly. γ is the schedule: cosine
(γ(r) = sin(πr/2), MaskGIT's mask ratio) or linear (γ(r) = r).

The denoiser predicts the clean codes x₀ at every position (x₀-parametrisation); a step from t to the previous
timestep s of the sampling schedule turns that prediction into the grid at level s:

- `"mask"` (absorbing state, MaskGIT / VQ-Diffusion): masked positions get a code sampled from the prediction; the
  `round(γ(s/T)·n)` least confident of them (confidence = log-probability of the sampled code + Gumbel noise scaled by
  `temperature·t/T`, annealed to zero) are masked again. Unmasked codes are final.
- `"uniform"`: a code is sampled from the prediction at every position, then `round(γ(s/T)·n)` positions drawn
  uniformly are replaced by uniformly random codes — exactly the corruption training saw at level s.

Because every step targets the corruption level of the timestep it lands on, any number of sampling steps from 1 to
T walks the same path as training (diffusers' VQ-Diffusion scheduler assumes s = t − 1 and breaks when respaced).
"""

import math
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from ..utils.checks import check_finite, check_float, check_int

CORRUPTIONS = ("mask", "uniform")
SCHEDULES = ("cosine", "linear")


@dataclass
class DiscreteDiffusionSchedulerOutput(BaseOutput):
    """
    Output of [`DiscreteDiffusionScheduler.step`].

    Args:
        prev_sample (`torch.LongTensor` of shape `(batch_size, num_codes)`): The codes at the previous timestep.
        pred_original_sample (`torch.LongTensor` of shape `(batch_size, num_codes)`): The sampled prediction of the
            clean codes x₀ (codes that are already final are kept).
    """

    prev_sample: torch.LongTensor | None = None
    pred_original_sample: torch.LongTensor | None = None


class DiscreteDiffusionScheduler(SchedulerMixin, ConfigMixin):
    r"""
    Uniform-noise and mask (absorbing) discrete diffusion over code grids (see the module docstring).

    Parameters:
        num_train_timesteps (`int`, defaults to 100): T, the number of corruption levels seen in training.
        codebook_size (`int`, defaults to 1024): K; uniform noise draws codes from [0, K).
        corruption (`str`, defaults to `"mask"`): `"mask"` or `"uniform"`.
        mask_token_id (`int`, *optional*): The id of the mask token (required for `"mask"`; see
            [`~vq_hub.models.priors.CodeVocabulary`]).
        schedule (`str`, defaults to `"cosine"`): `"cosine"` or `"linear"` corruption fraction γ.
    """

    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 100,
        codebook_size: int = 1024,
        corruption: str = "mask",
        mask_token_id: int | None = None,
        schedule: str = "cosine",
    ):
        if corruption not in CORRUPTIONS:
            raise ValueError(f"`corruption` must be one of {CORRUPTIONS}, got {corruption!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"`schedule` must be one of {SCHEDULES}, got {schedule!r}")
        if corruption == "mask" and (mask_token_id is None or mask_token_id < codebook_size):
            raise ValueError(f"`mask_token_id` must be an id ≥ codebook_size ({codebook_size}) for "
                             f"corruption='mask', got {mask_token_id}")  # fmt: skip
        if num_train_timesteps < 1:
            raise ValueError(f"`num_train_timesteps` must be ≥ 1, got {num_train_timesteps}")
        self.num_inference_steps = num_train_timesteps
        self.timesteps = torch.arange(num_train_timesteps, 0, -1)

    # ----------------------------------------------------------------------------------------------- schedule

    def corruption_fraction(self, timesteps: torch.Tensor | int) -> torch.Tensor:
        """γ(t/T): the fraction of free codes corrupted at timestep t (0 at t = 0, 1 at t = T)."""
        ratio = torch.as_tensor(timesteps, dtype=torch.float64) / self.config.num_train_timesteps
        fraction = torch.sin(ratio * math.pi / 2) if self.config.schedule == "cosine" else ratio
        return fraction.clamp(0, 1)

    def num_corrupted(self, timesteps: torch.Tensor | int, num_free: torch.Tensor | int) -> torch.LongTensor:
        """How many of `num_free` codes are corrupted at `timesteps` (at least one for t ≥ 1, all at T)."""
        counts = torch.round(self.corruption_fraction(timesteps) * torch.as_tensor(num_free, dtype=torch.float64))
        positive = torch.as_tensor(timesteps) > 0
        counts = torch.where(positive & (counts < 1) & (torch.as_tensor(num_free) > 0), 1, counts)
        return counts.long()

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Evenly spaced timesteps from T down to T/num_inference_steps; the last step lands on 0 (clean)."""
        total = self.config.num_train_timesteps
        num_inference_steps = check_int(num_inference_steps, "num_steps")
        if not 1 <= num_inference_steps <= total:
            raise ValueError(f"`num_steps` must be an integer in [1, {total}] (the scheduler's "
                             f"num_train_timesteps), got {num_inference_steps!r}")  # fmt: skip
        steps = torch.linspace(total, 0, num_inference_steps + 1, dtype=torch.float64).round().long()
        self.num_inference_steps = num_inference_steps
        self.timesteps = steps[:-1].to(device)

    def previous_timestep(self, timestep: int | torch.Tensor) -> int:
        """The timestep a step from `timestep` lands on in the current schedule (0 after the last)."""
        timesteps = self.timesteps.tolist()
        timestep = check_int(timestep, "timestep")
        if timestep not in timesteps:
            raise ValueError(f"`timestep` {timestep} is not in the current schedule {timesteps} (set by "
                             f"`set_timesteps({self.num_inference_steps})`)")  # fmt: skip
        index = timesteps.index(timestep)
        return timesteps[index + 1] if index + 1 < len(timesteps) else 0

    # ----------------------------------------------------------------------------------------------- training

    def add_noise(
        self,
        codes: torch.LongTensor,
        timesteps: torch.LongTensor,
        generator: torch.Generator | None = None,
        validate: bool = True,
    ) -> torch.LongTensor:
        """Corrupt exactly `num_corrupted(t)` codes of each row of `codes` `(B, n)` at its own timestep t `(B,)`.

        `validate=False` skips the range check of `timesteps` (it reads them back: a host sync), for training loops
        that draw them in [1, T] themselves; everything else runs on the codes' device."""
        if codes.ndim != 2:
            raise ValueError(f"`codes` must be (batch, num_codes), got shape {tuple(codes.shape)}")
        timesteps = torch.as_tensor(timesteps, device=codes.device).reshape(-1)
        if timesteps.dtype.is_floating_point or timesteps.dtype == torch.bool:
            raise TypeError(f"`timesteps` must be integers, got {timesteps.dtype}")
        if timesteps.shape[0] != codes.shape[0]:
            raise ValueError(f"`timesteps` needs one timestep per row: {codes.shape[0]}, got {timesteps.shape[0]}")
        if validate and (timesteps.min() < 0 or timesteps.max() > self.config.num_train_timesteps):
            raise ValueError(f"`timesteps` must lie in [0, {self.config.num_train_timesteps}]")
        counts = self.num_corrupted(timesteps, codes.shape[1])
        corrupt = self._random_positions(torch.ones_like(codes, dtype=torch.bool), counts, generator)
        return torch.where(corrupt, self._noise_like(codes, generator), codes)

    # ----------------------------------------------------------------------------------------------- sampling

    def initial_codes(self, shape: tuple[int, int], known: torch.LongTensor | None = None,
                      keep_mask: torch.BoolTensor | None = None, generator=None, device=None) -> torch.LongTensor:  # fmt: skip
        """x_T: every free code corrupted (masked, or uniformly random); kept positions hold `known`."""
        template = torch.zeros(shape, dtype=torch.long, device=device)
        codes = self._noise_like(template, generator)
        if keep_mask is not None:
            codes = torch.where(keep_mask, known.to(codes.device), codes)
        return codes

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.LongTensor,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        keep_mask: torch.BoolTensor | None = None,
        return_dict: bool = True,
    ) -> DiscreteDiffusionSchedulerOutput | tuple:
        """One reverse step from `timestep` to the previous timestep of the schedule.

        Args:
            model_output (`torch.Tensor` of shape `(B, n, K)`): The denoiser's logits for the clean codes.
            timestep (`int`): The current timestep (one of `self.timesteps`).
            sample (`torch.LongTensor` of shape `(B, n)`): The codes at `timestep`.
            temperature (`float`): Softmax temperature of the sampled codes (0 = argmax) and, for `"mask"`, the scale
                of the confidence noise.
            keep_mask (`torch.BoolTensor` of shape `(B, n)`, *optional*): Known positions, never changed.
        """
        if model_output.shape[:2] != sample.shape or model_output.shape[-1] != self.config.codebook_size:
            raise ValueError(f"`model_output` must be (B, n, {self.config.codebook_size}) for `sample` "
                             f"{tuple(sample.shape)}, got {tuple(model_output.shape)}")  # fmt: skip
        check_finite(model_output, "model_output")  # NaN logits would silently become code 0
        temperature = check_float(temperature, "temperature", minimum=0.0)
        free = torch.ones_like(sample, dtype=torch.bool) if keep_mask is None else ~keep_mask
        previous = self.previous_timestep(timestep)
        target = self.num_corrupted(previous, free.sum(dim=1).cpu()).to(sample.device)
        log_probs = torch.log_softmax(model_output.float(), dim=-1)
        predicted = self._sample_codes(log_probs, temperature, generator)

        if self.config.corruption == "mask":
            masked = (sample == self.config.mask_token_id) & free
            predicted = torch.where(masked, predicted, sample)
            confidence = log_probs.gather(-1, predicted.clamp(max=self.config.codebook_size - 1)[..., None])[..., 0]
            if temperature > 0:
                noise = self._gumbel(confidence.shape, generator, confidence.device)
                confidence = confidence + temperature * (int(timestep) / self.config.num_train_timesteps) * noise
            # Only masked positions compete; the least confident `target` of them stay masked.
            confidence = torch.where(masked, confidence, torch.inf)
            remask = self._lowest(confidence, torch.minimum(target, masked.sum(dim=1)))
            prev_sample = torch.where(remask, self.config.mask_token_id, predicted)
        else:
            predicted = torch.where(free, predicted, sample)
            renoise = self._random_positions(free, target, generator)
            prev_sample = torch.where(renoise, self._noise_like(sample, generator), predicted)

        if not return_dict:
            return prev_sample, predicted
        return DiscreteDiffusionSchedulerOutput(prev_sample=prev_sample, pred_original_sample=predicted)

    # ----------------------------------------------------------------------------------------------- internals

    @staticmethod
    def _uniform(shape, generator, device) -> torch.Tensor:
        """U(0, 1) draws made on the generator's device (a CPU generator works for CUDA samples), then moved; with a
        list of generators, row b is drawn from generator b."""
        if isinstance(generator, list):
            return torch.stack([torch.rand(shape[1:], generator=g, device=g.device) for g in generator]).to(device)
        source = generator.device if generator is not None else device
        return torch.rand(shape, generator=generator, device=source).to(device)

    def _noise_like(self, codes: torch.LongTensor, generator) -> torch.LongTensor:
        if self.config.corruption == "mask":
            return torch.full_like(codes, self.config.mask_token_id)
        size = self.config.codebook_size
        return (self._uniform(codes.shape, generator, codes.device) * size).long().clamp(max=size - 1)

    def _random_positions(self, allowed: torch.BoolTensor, counts: torch.LongTensor, generator) -> torch.BoolTensor:
        """`counts[b]` positions of row b drawn uniformly among `allowed` ones."""
        scores = self._uniform(allowed.shape, generator, allowed.device)
        return self._lowest(torch.where(allowed, scores, torch.inf), counts)

    @staticmethod
    def _lowest(scores: torch.Tensor, counts: torch.LongTensor) -> torch.BoolTensor:
        """A mask of the `counts[b]` lowest scores of each row b."""
        ranks = scores.argsort(dim=1).argsort(dim=1)
        return ranks < torch.as_tensor(counts, device=scores.device).reshape(-1, 1)

    @staticmethod
    def _gumbel(shape, generator, device) -> torch.Tensor:
        uniform = DiscreteDiffusionScheduler._uniform(shape, generator, device)
        return -torch.log(-torch.log(uniform.clamp(1e-20, 1 - 1e-7)))

    @staticmethod
    def _sample_codes(log_probs: torch.Tensor, temperature: float, generator) -> torch.LongTensor:
        if temperature == 0:
            return log_probs.argmax(dim=-1)
        gumbel = DiscreteDiffusionScheduler._gumbel(log_probs.shape, generator, log_probs.device)
        return (log_probs / temperature + gumbel).argmax(dim=-1)  # Gumbel-max: a draw from softmax(logits / τ)

    def __len__(self) -> int:
        return self.config.num_train_timesteps
