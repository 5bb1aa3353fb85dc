"""Turn `vq-hub evaluate` JSON reports into the README's quality table (mean over seeds, ± half their spread) and the
plot of FID against seconds per image (matplotlib, `pip install matplotlib`).

    vq-hub evaluate --model checkpoints/fashion-mnist-autoregressive --guidance-scale 1 2 3 5 --seed 0 1 \
        --num-images 1000 --out docs/quality_autoregressive.json
    vq-hub evaluate --model checkpoints/fashion-mnist-diffusion --num-steps 4 8 16 50 --guidance-scale 1 2 3 5 \
        --seed 0 1 --num-images 1000 --out docs/quality_diffusion.json
    python examples/quality_tables.py docs/quality_autoregressive.json docs/quality_diffusion.json \
        --plot docs/fid_vs_seconds_per_image.png
"""

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

from vq_hub.utils.io import atomic_file

FIGURES = [("FID", "fid", "{:.2f}"), ("precision", "precision", "{:.3f}"), ("recall", "recall", "{:.3f}"),
           ("class acc", "class_accuracy", "{:.3f}"), ("s/image", "seconds_per_image", "{:.4f}")]  # fmt: skip


def configurations(reports: list[dict]) -> dict[tuple, list[dict]]:
    """Rows grouped by (pipeline, steps, guidance, temperature, top-k): the seeds of one configuration together."""
    groups = defaultdict(list)
    for report in reports:
        for row in report["results"]:
            key = (row["pipeline"], row.get("num_steps"), row["guidance_scale"], row["temperature"], row.get("top_k"))
            groups[key].append(row)
    return groups


def cell(rows: list[dict], key: str, style: str) -> str:
    values = [row[key] for row in rows if row.get(key) is not None]
    if not values:
        return "–"
    text = style.format(statistics.fmean(values))
    return text + (f" ± {style.format((max(values) - min(values)) / 2)}" if len(values) > 1 else "")


def markdown(groups: dict[tuple, list[dict]]) -> str:
    prior = {"VQAutoregressivePipeline": "autoregressive", "VQDiscreteDiffusionPipeline": "diffusion"}
    lines = ["| prior | steps | guidance | " + " | ".join(name for name, _, _ in FIGURES) + " |",
             "|---|---:|---:|" + "---:|" * len(FIGURES)]  # fmt: skip
    for (pipeline, steps, guidance, _, _), rows in groups.items():
        cells = [cell(rows, key, style) for _, key, style in FIGURES]
        lines.append(f"| {prior.get(pipeline, pipeline)} | {steps or '–'} | {guidance:g} | " + " | ".join(cells) + " |")
    first = next(iter(groups.values()))[0]
    seeds = sorted({row["seed"] for rows in groups.values() for row in rows})
    lines.append(f"\nN = {first['num_images']:,} samples per configuration and seed (every class in turn), seeds "
                 f"{', '.join(map(str, seeds))}: mean ± half the difference between seeds. Feature network: "
                 f"{first['feature_network']['name']} (our classifier, not Inception v3); reference: "
                 f"{first['reference']['split']} split, {first['num_reference_images']:,} images.")  # fmt: skip
    return "\n".join(lines)


def plot(groups: dict[tuple, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    guidances = sorted({key[2] for key in groups})
    lines = defaultdict(list)  # (pipeline, guidance) → points along the steps
    for (pipeline, steps, guidance, _, _), rows in groups.items():
        x = statistics.fmean(row["seconds_per_image"] for row in rows)
        y = statistics.fmean(row["fid"] for row in rows)
        spread = (max(row["fid"] for row in rows) - min(row["fid"] for row in rows)) / 2
        lines[(pipeline, guidance)].append((x, y, spread, steps))
    for (pipeline, guidance), points in sorted(lines.items()):
        points.sort(key=lambda point: (point[3] or 0, point[0]))  # along the steps
        colour = colours[guidances.index(guidance) % len(colours)]
        autoregressive = pipeline == "VQAutoregressivePipeline"
        axes.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points], color=colour,
                      marker="*" if autoregressive else "o", markersize=12 if autoregressive else 5,
                      linestyle="none" if autoregressive else "-", capsize=2,
                      label=f"{'autoregressive' if autoregressive else 'diffusion'}, guidance {guidance:g}")  # fmt: skip
        if not autoregressive:
            for x, y, _, steps in points:
                axes.annotate(str(steps), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7, color=colour)
    axes.set_xscale("log")
    threads = sorted({row.get("torch_threads") for rows in groups.values() for row in rows} - {None})
    devices = sorted({row.get("device", "cpu") for rows in groups.values() for row in rows})
    where = ", ".join(devices) + (f", {'/'.join(map(str, threads))} thread(s)" if devices == ["cpu"] and threads else "")
    axes.set_xlabel(f"seconds per image (sampling + decoding, {where})")
    axes.set_ylabel("FID (vq_hub Fashion-MNIST classifier features)")
    axes.set_title("Fashion-MNIST priors: FID against sampling time (diffusion: steps annotated)", fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    with atomic_file(path) as temporary:
        figure.savefig(temporary, dpi=120)
    plt.close(figure)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reports", nargs="+", help="JSON reports of vq-hub evaluate.")
    parser.add_argument("--plot", help="Where to write the FID against seconds-per-image plot (PNG).")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    groups = configurations([json.loads(Path(path).read_text()) for path in args.reports])
    if args.plot:
        plot(groups, Path(args.plot))
    return markdown(groups)


if __name__ == "__main__":
    print(main())
