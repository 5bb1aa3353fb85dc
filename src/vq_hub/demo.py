"""The Gradio demo: generate, reconstruct and inpaint with saved vq_hub models, on top of the public API.

`vq-hub demo` and the repository's `app.py` (what a Hugging Face Space runs) both call `build_demo`. Nothing is
fetched from the internet: analytics are off and the default theme's fonts are served by the app itself.
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no telemetry, works offline

import functools
import queue
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from PIL import Image

from .data import FASHION_MNIST_CLASSES, image_to_tensor, shipped_fashion_mnist, tensor_to_images, tile_images
from .hub import resolve_folder
from .metrics import psnr
from .code_levels import is_hierarchical, tokenize_levels
from .models import HierarchicalVQModel, VQVAEModel, load_tokenizer
from .pipelines import VQDiscreteDiffusionPipeline, VQHierarchicalPipeline, VQPipeline
from .visualization import code_map

SHIPPED = ("fashion-mnist-diffusion", "fashion-mnist-autoregressive", "scenes-text-to-image", "fashion-mnist-vqvae2",
           "fashion-mnist-vqvae")  # fmt: skip
UNCONDITIONAL = "any (unconditional)"
KEEP_ROWS, DRAWN_MASK = "keep the top rows", "regenerate what I draw"
SCALE = 4  # displayed pixels per image pixel: 32×32 images are too small to see


@dataclass
class DemoModels:
    """What the demo serves: pipelines by name, the tokenizer of the Reconstruct tab, and the class names."""

    pipelines: dict[str, VQPipeline]
    tokenizer: VQVAEModel | HierarchicalVQModel
    class_names: list[str]
    tokenizer_name: str = "tokenizer"


def shipped_checkpoints() -> list[Path]:
    """The repository's shipped checkpoints (from the working directory, else beside the source tree)."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if all((root / "checkpoints" / name).is_dir() for name in SHIPPED):
            return [root / "checkpoints" / name for name in SHIPPED]
    raise FileNotFoundError(f"the shipped checkpoints ({', '.join(SHIPPED)}) are not in ./checkpoints nor beside "
                            "the source tree: give the models to serve")  # fmt: skip


def load_models(models: list[str | os.PathLike] | None = None, class_names: list[str] | None = None) -> DemoModels:
    """Load pipeline and tokenizer folders or Hub ids (default: the shipped Fashion-MNIST checkpoints, with their
    class names). The tokenizer is the last tokenizer given, else the first pipeline's `vqvae`."""
    if models is None:
        models, class_names = shipped_checkpoints(), class_names or list(FASHION_MNIST_CLASSES)
    pipelines, tokenizer, tokenizer_name = {}, None, None
    for name_or_path in models:
        folder = resolve_folder(name_or_path, argument="models")
        if (folder / "model_index.json").is_file():
            pipe = VQPipeline.from_pretrained(folder)
            pipe.set_progress_bar_config(disable=True)
            pipelines[folder.name] = pipe
        elif (folder / "config.json").is_file():
            tokenizer, tokenizer_name = load_tokenizer(folder).eval(), folder.name
        else:
            raise ValueError(f"`models`: {str(name_or_path)!r} is neither a pipeline (model_index.json) nor a "
                             "tokenizer (config.json)")  # fmt: skip
    if tokenizer is None and not pipelines:
        raise ValueError("`models` is empty: give at least one pipeline or tokenizer")
    if tokenizer is None:
        tokenizer_name, tokenizer = f"{next(iter(pipelines))}/vqvae", next(iter(pipelines.values())).vqvae
    num_classes = max((pipe.vocabulary.num_classes for pipe in pipelines.values()), default=0)
    recorded = [pipe.class_names for pipe in pipelines.values() if pipe.vocabulary.num_classes == num_classes]
    class_names = class_names or next((names for names in recorded if names), None)  # the configs' id2label
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"`class_names` has {len(class_names)} names for {num_classes} classes")
    class_names = list(class_names or (f"class {i}" for i in range(num_classes)))
    return DemoModels(pipelines, tokenizer, class_names, tokenizer_name)


# ------------------------------------------------------------------------------------------------- the tabs' work


def generate(models: DemoModels, pipeline: str, class_name: str, num_images: int, num_steps: int, guidance: float,
             temperature: float, seed: int, prompt: str = ""):  # fmt: skip
    """Sample `num_images` images (of `prompt` for a text-to-image pipeline, else of `class_name`); yields the grid as
    it fills in (every step of diffusion, every row of codes of the autoregressive prior), then the final images and
    a line of text."""
    pipe = _pipeline(models, pipeline)
    options = _options(models, pipe, class_name, int(num_images), num_steps, guidance, temperature, seed)
    if is_text_pipeline(pipe):
        if not (prompt or "").strip():
            raise gr.Error(f'{pipeline} draws prompts: type one, e.g. "a red sneaker to the left of a blue bag".')
        del options["class_labels"]
        options.update(prompt=[prompt], num_images_per_prompt=options.pop("batch_size"))
    for images, text in _sample_live(pipe, options):
        yield _enlarge(images, SCALE), text


def reconstruct(models: DemoModels, image: Image.Image | None):
    """`(code map, input | reconstruction, PSNR in dB)` of one image with the tokenizer."""
    if image is None:
        raise gr.Error("Upload an image first.")
    tokenizer = models.tokenizer
    pixels = image_to_tensor(image, tokenizer.config.sample_size, tokenizer.config.in_channels)[None]
    with torch.no_grad():
        codes = tokenizer.tokenize(pixels)
        reconstruction = tokenizer.detokenize(codes).float().clamp(-1, 1)
    comparison = _enlarge(torch.cat([pixels, reconstruction]), 2 * SCALE)
    return _code_maps(tokenizer, pixels), comparison, round(float(psnr(reconstruction, pixels)), 2)


def _code_maps(tokenizer, pixels: torch.Tensor) -> Image.Image:
    """The code map of one image; for a two-level tokenizer each level's, side by side (top first, same height)."""
    with torch.no_grad():
        grids = tokenize_levels(tokenizer, pixels)
    if not is_hierarchical(tokenizer):
        return code_map(grids[0][0], tokenizer.codebook_size)
    sizes = tokenizer.codebook_sizes
    finest = grids[-1].shape[-2]
    maps = [code_map(grid[0], size, cell=32 * finest // grid.shape[-2]) for grid, size in zip(grids, sizes)]
    joined = Image.new("RGB", (sum(m.width for m in maps) + 8 * (len(maps) - 1), max(m.height for m in maps)), "white")
    left = 0
    for picture in maps:
        joined.paste(picture.convert("RGB"), (left, 0))
        left += picture.width + 8
    return joined


def inpaint(models: DemoModels, pipeline: str, editor: dict | None, mode: str, rows: int, class_name: str,
            num_images: int, num_steps: int, seed: int):  # fmt: skip
    """Resample part of an image: the rows below the first `rows` rows of codes, or the cells under the strokes drawn
    on it (diffusion only). Yields the kept part (grey = resampled) followed by the results, as they fill in."""
    pipe = _pipeline(models, pipeline)
    if is_text_pipeline(pipe):
        raise gr.Error(f"{pipeline} draws prompts; completion here works with the class-conditional pipelines.")
    background = (editor or {}).get("background")
    if background is None:
        raise gr.Error("Upload an image first.")
    height, width = pipe.resolution
    channels = pipe.vqvae.config.in_channels
    image = image_to_tensor(background, (height, width), channels)[None]
    diffusion = isinstance(pipe, VQDiscreteDiffusionPipeline)
    two_level = isinstance(pipe, VQHierarchicalPipeline)  # it keeps the image's top codes, resamples the bottom
    if mode == DRAWN_MASK:
        if not (diffusion or (two_level and pipe.bottom_is_denoiser)):
            raise gr.Error("The autoregressive prior completes images in reading order: choose 'keep the top rows', "
                           "or a diffusion pipeline to regenerate a drawn region.")  # fmt: skip
        mask = _drawn_mask(editor, (height, width))
        if not mask.any():
            raise gr.Error("Draw over the parts to regenerate (the brush), or choose 'keep the top rows'.")
    else:
        mask = torch.zeros(1, 1, height, width)
        mask[..., int(rows) * pipe.vqvae.downsample_factor :, :] = 1
    options = _options(models, pipe, class_name, int(num_images), num_steps, 2.0, 1.0, seed)
    batch = image.expand(options.pop("batch_size"), -1, -1, -1)
    if diffusion or two_level:
        options.update(image=batch, mask=mask)
    else:
        options.update(image=batch, num_prefix_rows=int(rows))
    kept = torch.where(_whole_cells(mask, pipe.vqvae.downsample_factor), torch.zeros_like(image), image)
    for images, text in _sample_live(pipe, options):
        yield _enlarge(torch.cat([kept, images]), SCALE), text


# ------------------------------------------------------------------------------------------------- helpers


def _finest_rows(pipe: VQPipeline) -> int:
    """Rows of the finest code grid (the bottom one of VQ-VAE-2): what 'rows of codes kept' counts."""
    return pipe.resolution[0] // pipe.vqvae.downsample_factor


def is_text_pipeline(pipe: VQPipeline) -> bool:
    """A text-to-image pipeline (it has a `tokenizer` component and takes prompts, not classes)."""
    return getattr(pipe, "tokenizer", None) is not None


def _pipeline(models: DemoModels, name: str) -> VQPipeline:
    if name not in models.pipelines:
        raise gr.Error(f"Unknown pipeline {name!r}; this demo serves {sorted(models.pipelines)}.")
    return models.pipelines[name]


def _options(models, pipe, class_name, num_images, num_steps, guidance, temperature, seed) -> dict:
    """The pipeline call's keyword arguments for the widgets' values."""
    if class_name in (None, "", UNCONDITIONAL) or pipe.vocabulary.num_classes == 0 or is_text_pipeline(pipe):
        labels = None
    elif class_name in models.class_names:
        labels = [models.class_names.index(class_name)] * num_images
    else:
        raise gr.Error(f"Unknown class {class_name!r}.")
    options = {"batch_size": num_images, "class_labels": labels, "guidance_scale": float(guidance),
               "temperature": float(temperature), "generator": torch.Generator().manual_seed(int(seed))}  # fmt: skip
    if _takes_steps(pipe):
        options["num_steps"] = int(num_steps)
    return options


def _takes_steps(pipe: VQPipeline) -> bool:
    """A diffusion pipeline, or a VQ-VAE-2 one whose bottom prior is a denoiser."""
    return isinstance(pipe, VQDiscreteDiffusionPipeline) or getattr(pipe, "bottom_is_denoiser", False)


def _sample_live(pipe: VQPipeline, options: dict):
    """Run the pipeline in a thread; yield `(images in [-1, 1], text)` for every intermediate grid its callback
    reports, then the final images. Cells not sampled yet are grey."""
    height, width = pipe.code_grid_size
    size = pipe.vocabulary.codebook_size
    diffusion = isinstance(pipe, VQDiscreteDiffusionPipeline)
    total = options["num_steps"] if diffusion else height
    frames, finished = queue.Queue(), object()

    def on_step(_pipe, step, _position, tensors):
        codes = tensors["codes"]
        if isinstance(pipe, VQHierarchicalPipeline):  # two stages of two grids: only the final images are shown
            return {}
        if diffusion:  # still-masked cells hold ids ≥ K: show the prediction there, greyed out
            known = codes < size
            codes = torch.where(known, codes, tensors["pred_original_sample"])
            frames.put((codes, known, f"step {step + 1} of {total}"))
        elif codes.shape[1] % width == 0:  # a row of codes is complete
            count = codes.shape[1]
            full = torch.cat([codes, codes.new_zeros(codes.shape[0], height * width - count)], dim=1)
            known = (torch.arange(height * width) < count).expand_as(full)
            frames.put(
                (full.view(-1, height, width), known.reshape(-1, height, width), f"row {count // width} of {total}")
            )
        return {}

    result = {}

    def run():
        try:
            result["output"] = pipe(callback_on_step_end=on_step, output_type="pt", **options)
        except Exception as error:  # shown in the app by the loop below
            result["error"] = error
        finally:
            frames.put(finished)

    threading.Thread(target=run, daemon=True).start()
    while (frame := frames.get()) is not finished:
        codes, known, text = frame
        yield _partial_images(pipe.vqvae, codes, known), text
    if "error" in result:
        raise gr.Error(str(result["error"]))
    images = result["output"].images * 2 - 1
    yield images, f"done: {len(images)} images, {type(pipe).__name__}"


@torch.no_grad()
def _partial_images(vqvae: VQVAEModel, codes: torch.LongTensor, known: torch.BoolTensor) -> torch.Tensor:
    """Decode code grids `(B, h, w)`; cells not `known` painted mid-grey."""
    images = vqvae.detokenize(codes).float().clamp(-1, 1)
    unknown = _cells_to_pixels((~known)[:, None], vqvae.downsample_factor)
    return torch.where(unknown, torch.zeros_like(images), images)


def _whole_cells(mask: torch.Tensor, factor: int) -> torch.BoolTensor:
    """A pixel mask `(B, 1, H, W)` grown to whole code cells of `factor` pixels (a cell with any pixel set)."""
    return _cells_to_pixels(torch.nn.functional.max_pool2d(mask.float(), factor) > 0.5, factor)


def _cells_to_pixels(cells: torch.BoolTensor, factor: int) -> torch.BoolTensor:
    return cells.repeat_interleave(factor, -2).repeat_interleave(factor, -1)


def _drawn_mask(editor: dict, size: tuple[int, int]) -> torch.Tensor:
    """The union of the editor's drawn layers (any opaque pixel), as the image is resized: `(1, 1, H, W)`."""
    layers = [layer for layer in editor.get("layers") or [] if layer is not None]
    if not layers:
        return torch.zeros(1, 1, *size)
    alpha = np.maximum.reduce([np.asarray(layer.convert("RGBA"))[..., 3] for layer in layers])
    mask = image_to_tensor(Image.fromarray(alpha), size, 1)[None]
    return (mask > 0).float()  # pixels at least half covered once resized


def _enlarge(images: torch.Tensor, scale: int, padding: int = 2) -> Image.Image:
    """A batch in [-1, 1] side by side, enlarged without blurring."""
    row = tile_images(tensor_to_images(images), padding)
    return row.resize((row.width * scale, row.height * scale), Image.Resampling.NEAREST)


@functools.lru_cache
def example_images(resolution: int, count: int = 4) -> tuple[str, ...]:
    """A few shipped Fashion-MNIST images as PNG files, padded to `resolution` as the tokenizers see them and
    enlarged 8× (drawing a mask on a 32-pixel image is hard; the enlargement is undone on the way in)."""
    from .cli._common import read_images

    folder = Path(tempfile.mkdtemp(prefix="vq_hub_demo_examples-"))
    images, _ = read_images(str(shipped_fashion_mnist()), count, seed=0)
    paths = []
    for index, image in enumerate(images):
        path = folder / f"example_{index}.png"
        _enlarge(image_to_tensor(image, resolution, 1)[None], 8, padding=0).save(path)
        paths.append(str(path))
    return tuple(paths)


# ------------------------------------------------------------------------------------------------- the app


def build_demo(models: DemoModels | None = None) -> gr.Blocks:
    """The Gradio app (`gr.Blocks`) with the Generate, Reconstruct and Inpaint / complete tabs."""
    models = models or load_models()
    names = list(models.pipelines)
    diffusion = {name for name, pipe in models.pipelines.items() if _takes_steps(pipe)}
    text = {name for name, pipe in models.pipelines.items() if is_text_pipeline(pipe)}
    square = [name for name in names if name not in text]  # completion works on the class-conditional ones
    classes = [UNCONDITIONAL, *models.class_names]
    default_class = models.class_names[0] if models.class_names else UNCONDITIONAL
    max_steps = max((pipe.scheduler.config.num_train_timesteps for name, pipe in models.pipelines.items()
                     if name in diffusion), default=16)  # fmt: skip
    grid_rows = _finest_rows(models.pipelines[square[0]]) if square else 0
    examples = list(example_images(models.tokenizer.config.sample_size))
    # One sampling run at a time, across both tabs: a pipeline's scheduler holds the timesteps of the run.
    sampling = {"concurrency_id": "sampling", "concurrency_limit": 1}
    with gr.Blocks(title="vq_hub demo", analytics_enabled=False) as demo:
        listed = ", ".join(f"`{name}`" for name in names) or "none"
        gr.Markdown("# vq_hub\nDiscrete image tokenizers and priors over their codes. "
                    f"Pipelines: {listed}; tokenizer: `{models.tokenizer_name}`.")  # fmt: skip
        with gr.Tab("Generate", visible=bool(names)):
            with gr.Row():
                with gr.Column():
                    pipeline = gr.Dropdown(names, value=names[0] if names else None, label="pipeline")
                    class_name = gr.Dropdown(classes, value=default_class, label="class",
                                             visible=bool(names) and names[0] not in text)  # fmt: skip
                    prompt = gr.Textbox(label="prompt", placeholder="a red sneaker to the left of a blue bag",
                                        visible=bool(names) and names[0] in text, elem_id="generate-prompt")  # fmt: skip
                    num_images = gr.Slider(1, 8, value=4, step=1, label="images")
                    steps = gr.Slider(1, max_steps, value=min(16, max_steps), step=1, label="steps (diffusion)",
                                      visible=bool(names) and names[0] in diffusion)  # fmt: skip
                    guidance = gr.Slider(1, 6, value=2, step=0.5, label="guidance scale (1 = none)")
                    temperature = gr.Slider(0, 2, value=1, step=0.1, label="temperature (0 = greedy)")
                    seed = gr.Number(0, precision=0, label="seed")
                    button = gr.Button("Generate", variant="primary", elem_id="generate-button")
                with gr.Column():
                    samples = gr.Image(label="samples", type="pil", format="png", elem_id="generate-output")
                    status = gr.Textbox(label="progress", interactive=False, elem_id="generate-status")
            pipeline.change(lambda name: (gr.Slider(visible=name in diffusion), gr.Dropdown(visible=name not in text),
                                          gr.Textbox(visible=name in text)),
                            pipeline, [steps, class_name, prompt], api_visibility="private")  # fmt: skip
            button.click(functools.partial(generate, models),
                         [pipeline, class_name, num_images, steps, guidance, temperature, seed, prompt],
                         [samples, status], api_name="generate", **sampling)  # fmt: skip

        with gr.Tab("Reconstruct"):
            with gr.Row():
                with gr.Column():
                    upload = gr.Image(label="image", type="pil", format="png", image_mode="RGB")
                    gr.Examples(examples, upload)
                    reconstruct_button = gr.Button("Reconstruct", variant="primary")
                with gr.Column():
                    codes = gr.Image(label="code grid (colour and number = code id)", type="pil", format="png")
                    comparison = gr.Image(label="input | reconstruction", type="pil", format="png")
                    value = gr.Number(label="PSNR (dB)", interactive=False)
            reconstruct_button.click(functools.partial(reconstruct, models), upload, [codes, comparison, value],
                                     api_name="reconstruct")  # fmt: skip

        with gr.Tab("Inpaint / complete", visible=bool(square)):
            with gr.Row():
                with gr.Column():
                    editor = gr.ImageEditor(label="image (draw over what to regenerate)", type="pil", format="png",
                                            sources=("upload", "clipboard"),
                                            brush=gr.Brush(colors=["#ff0000"], default_size=24))  # fmt: skip
                    gr.Examples(examples, editor)
                    inpaint_pipeline = gr.Dropdown(square, value=square[0] if square else None, label="pipeline")
                    mode = gr.Radio([KEEP_ROWS, DRAWN_MASK], value=KEEP_ROWS, label="what to keep")
                    rows = gr.Slider(0, max(grid_rows - 1, 1), value=grid_rows // 2, step=1, label="rows of codes kept")
                    inpaint_class = gr.Dropdown(classes, value=UNCONDITIONAL, label="class")
                    inpaint_images = gr.Slider(1, 8, value=4, step=1, label="images")
                    inpaint_steps = gr.Slider(1, max_steps, value=min(16, max_steps), step=1,
                                              label="steps (diffusion)", visible=bool(diffusion))  # fmt: skip
                    inpaint_seed = gr.Number(0, precision=0, label="seed")
                    inpaint_button = gr.Button("Resample", variant="primary")
                with gr.Column():
                    completions = gr.Image(label="kept (grey = resampled) | results", type="pil", format="png")
                    inpaint_status = gr.Textbox(label="progress", interactive=False)
            inputs = [inpaint_pipeline, editor, mode, rows, inpaint_class, inpaint_images, inpaint_steps, inpaint_seed]
            inpaint_button.click(functools.partial(inpaint, models), inputs, [completions, inpaint_status],
                                 api_name="inpaint", **sampling)  # fmt: skip
    return demo
