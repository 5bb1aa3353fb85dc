"""The evaluation harness that `vq-hub evaluate`, the training scripts' validation and the README tables all call:
sample (or reconstruct) images, score them with a feature network against a reference, return a plain dict that
names the network every figure comes from."""

import time

import torch
from tqdm.auto import tqdm

from .. import code_levels
from .. import metrics as code_metrics
from ..data import image_size
from .feature_network import FeatureNetwork, resolve_feature_network
from .inception import find_inception_weights, inception_fid
from .metrics import class_accuracy, classifier_score, frechet_distance, kernel_distance, precision_recall
from .reference import ReferenceStatistics, extract_features

NO_INCEPTION = ("not computed: no Inception v3 weights on this machine (nothing is downloaded); give a path to "
                "torch-fidelity's weights-inception-2015-12-05-6726825d.pth and real images to compare with")  # fmt: skip


def score_images(
    images: torch.Tensor,
    feature_network: FeatureNetwork,
    reference: ReferenceStatistics | None = None,
    labels: torch.Tensor | None = None,
    nearest_k: int = 5,
    kid_subset_size: int = 1000,
    kid_subsets: int = 20,
    seed: int = 0,
    batch_size: int = 256,
) -> dict:
    """FID, KID, precision/recall/density/coverage, classifier score and (with `labels`, the classes the images were
    made for) class accuracy of `images` (N, C, H, W) in [-1, 1] against `reference` (default: the network's own).

    Precision/recall compare with as many reference features as there are images (drawn with `seed`), so figures of
    the same N compare; KID averages `kid_subsets` random subsets of `min(kid_subset_size, N)` (20 rather than the
    usual 100: the same unbiased estimate with a wider `kid_std`, at a fifth of the float64 kernel cost on a CPU)."""
    reference = reference if reference is not None else feature_network.reference
    if reference is None:
        raise ValueError(f"the feature network {feature_network.name!r} has no reference statistics: pass "
                         "`reference` (e.g. `ReferenceStatistics.from_features` of real images)")  # fmt: skip
    if len(images) < nearest_k + 2:  # prdc needs k + 1 neighbours besides each point
        raise ValueError(f"score at least {nearest_k + 2} images (nearest_k + 2), got {len(images)}")
    features, logits = extract_features(feature_network.classifier, images, batch_size)
    draw = torch.randperm(len(reference.features), generator=torch.Generator().manual_seed(seed))
    real = reference.features[draw[: len(features)].sort().values]
    kid_mean, kid_std = kernel_distance(reference.features, features, kid_subset_size, kid_subsets, seed=seed)
    score_mean, score_std = classifier_score(logits, splits=min(10, len(logits)), seed=seed)
    scores = {
        "fid": frechet_distance(reference, features),
        "kid": kid_mean,
        "kid_std": kid_std,
        **precision_recall(real, features, nearest_k),
        "classifier_score": score_mean,
        "classifier_score_std": score_std,
    }
    if labels is not None:
        scores["class_accuracy"] = class_accuracy(logits, labels)
    scores.update(num_images=len(features), num_reference_images=reference.num_images,
                  num_reference_features=len(real), nearest_k=nearest_k)  # fmt: skip
    return scores


def _describe(feature_network: FeatureNetwork, reference: ReferenceStatistics | None) -> dict:
    reference = reference if reference is not None else feature_network.reference
    return {"feature_network": feature_network.describe(), "reference": dict(reference.info) if reference else None}


def _inception(real_images, images, weights) -> dict:
    """`fid_inception` (standard Inception v3 FID) when weights were found and real images are given."""
    if weights is None:
        return {"fid_inception": None, "fid_inception_note": NO_INCEPTION}
    if real_images is None:
        return {"fid_inception": None, "fid_inception_note": "not computed: the Inception FID needs real images "
                "(the shipped reference statistics are of our classifier's features)"}  # fmt: skip
    return {"fid_inception": inception_fid(real_images, images, weights),
            "fid_inception_note": f"Inception v3 pool features (torchmetrics / torch-fidelity, weights {weights.name})"}  # fmt: skip


def class_labels_for(num_images: int, num_classes: int) -> torch.LongTensor | None:
    """Every class in turn (balanced within one image), as the test splits are; None for an unconditional prior."""
    return torch.arange(num_images) % num_classes if num_classes else None


def sample_images(pipe, num_images: int, batch_size: int = 100, seed: int = 0, progress: bool = True,
                  **call_kwargs) -> tuple[torch.Tensor, torch.LongTensor | None, float]:  # fmt: skip
    """`(images (N, C, H, W) in [-1, 1], class labels or None, seconds)`: `num_images` samples of `pipe`, every class
    in turn for a class-conditional prior, drawn with one generator seeded with `seed` (same seed and batch size, same
    images); the seconds include decoding."""
    if not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"`num_images` must be a positive integer, got {num_images!r}")
    if getattr(pipe, "tokenizer", None) is not None:
        raise TypeError(f"`pipe` is a text-to-image {type(pipe).__name__}: it draws prompts, not classes; evaluate it "
                        "with vq_hub.evaluation.text_to_image.evaluate_text_to_image (or `vq-hub evaluate --images "
                        "<captioned split>`)")  # fmt: skip
    labels = class_labels_for(num_images, pipe.vocabulary.num_classes)
    generator = torch.Generator(pipe.device).manual_seed(seed)
    pipe.set_progress_bar_config(disable=True)
    batches, start_time = [], time.perf_counter()
    with tqdm(total=num_images, desc="sampling", unit="img", disable=not progress) as bar:
        for start in range(0, num_images, batch_size):
            count = min(batch_size, num_images - start)
            batch_labels = labels[start : start + count].tolist() if labels is not None else None
            output = pipe(batch_size=count, class_labels=batch_labels, generator=generator, output_type="pt",
                          **call_kwargs)  # fmt: skip
            batches.append(output.images.float().cpu() * 2 - 1)
            bar.update(count)
    return torch.cat(batches), labels, time.perf_counter() - start_time


def evaluate_pipeline(
    pipe,
    feature_network=None,
    num_images: int = 1000,
    batch_size: int = 100,
    seed: int = 0,
    reference: ReferenceStatistics | None = None,
    real_images: torch.Tensor | None = None,
    inception_weights=None,
    progress: bool = True,
    nearest_k: int = 5,
    **call_kwargs,
) -> dict:
    """Sample `num_images` images with `pipe` (`call_kwargs`: `num_steps`, `guidance_scale`, `temperature`, `top_k`,
    …) and score them. `feature_network`: a folder, a `FeatureNetwork`, or None for the shipped one matching the
    images; `reference`: statistics of real images (default: the network's test split). Returns a flat dict: the
    scores, `seconds_per_image`, the sampling settings and which network and reference the figures come from."""
    if getattr(pipe, "tokenizer", None) is not None:
        sample_images(pipe, num_images)  # the TypeError that names the text-to-image evaluation
    channels, size = pipe.vqvae.config.in_channels, pipe.resolution  # (H, W): a prior's grid may be non-square
    network = resolve_feature_network(feature_network, channels, size, pipe.device)
    inception_weights = find_inception_weights(inception_weights)  # before sampling: a wrong path fails at once
    images, labels, seconds = sample_images(pipe, num_images, batch_size, seed, progress, **call_kwargs)
    scores = score_images(images, network, reference, labels, nearest_k, seed=seed)
    settings = {key: value for key, value in call_kwargs.items() if value is not None}
    report = {**settings, **scores, "seconds_per_image": seconds / num_images, "seed": seed, "batch_size": batch_size,
              "pipeline": type(pipe).__name__, "device": str(pipe.device),
              "torch_threads": torch.get_num_threads()}  # fmt: skip
    report.update(_inception(real_images, images, inception_weights))
    return {**report, **_describe(network, reference)}


@torch.no_grad()
def evaluate_tokenizer(
    vqvae,
    images: torch.Tensor,
    feature_network=None,
    labels: torch.Tensor | None = None,
    batch_size: int = 100,
    seed: int = 0,
    inception_weights=None,
    progress: bool = True,
    nearest_k: int = 5,
) -> dict:
    """Reconstruct `images` (N, C, H, W) in [-1, 1] (a test split) and score the reconstructions against the
    originals: rFID (FID of reconstructions vs the same images, our classifier's features), KID, precision/recall,
    class accuracy of the reconstructions (with `labels`), PSNR, SSIM, codebook usage and perplexity (per level for
    a VQ-VAE-2 tokenizer: `top_codebook_usage`, `bottom_perplexity`, …; and per depth of a residual tokenizer:
    `depth0_perplexity`, …)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    channels, (height, width) = vqvae.config.in_channels, image_size(vqvae.config.sample_size)
    if images.ndim != 4 or tuple(images.shape[1:]) != (channels, height, width):
        raise ValueError(f"`images` must be (N, {channels}, {height}, {width}) for this tokenizer, got "
                         f"{tuple(images.shape)}")  # fmt: skip
    network = resolve_feature_network(feature_network, channels, vqvae.config.sample_size, vqvae.device)
    inception_weights = find_inception_weights(inception_weights)
    vqvae.eval()
    levels, quantizers = code_levels.level_names(vqvae), list(code_levels.quantizers(vqvae).values())
    reconstructions, counts, start_time = [], [0] * len(levels), time.perf_counter()
    for start in tqdm(range(0, len(images), batch_size), desc="reconstructing", disable=not progress):
        batch = images[start : start + batch_size].to(vqvae.device, vqvae.dtype)
        codes = code_levels.tokenize_levels(vqvae, batch)
        counts = [total + code_levels.codebook_counts(quantizer, grid)
                  for total, grid, quantizer in zip(counts, codes, quantizers)]  # fmt: skip
        reconstructions.append(code_levels.detokenize_levels(vqvae, codes).float().clamp(-1, 1).cpu())
    reconstructions = torch.cat(reconstructions)
    seconds = time.perf_counter() - start_time
    code_statistics = {}
    for level, quantizer, level_counts in zip(levels, quantizers, counts):  # a residual level: each depth's too
        prefix = code_levels.level_prefix(level)
        for figure, value in code_levels.usage_and_perplexity(quantizer, level_counts).items():
            code_statistics[prefix + figure] = value
    real_features, _ = extract_features(network.classifier, images, batch_size)
    reference = ReferenceStatistics.from_features(real_features, labels, max_features=len(real_features), seed=seed,
                                                  split="the images given (originals)")  # fmt: skip
    scores = score_images(reconstructions, network, reference, labels, nearest_k, seed=seed)
    scores["rfid"] = scores.pop("fid")
    report = {
        **scores,
        "psnr": float(code_metrics.psnr(reconstructions, images.float())),
        "ssim": float(
            structural_similarity_index_measure((reconstructions + 1) / 2, (images.float() + 1) / 2, data_range=1.0)
        ),
        **code_statistics,
        "seconds_per_image": seconds / len(images),
        "tokenizer": type(vqvae).__name__,
    }
    report.update(_inception(images, reconstructions, inception_weights))
    return {**report, **_describe(network, reference)}
