"""The vq_hub Gradio demo as a Hugging Face Space runs it (`python app.py`): the shipped Fashion-MNIST checkpoints,
no internet needed. Locally, `vq-hub demo` does the same with options (--model, --port)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if (ROOT / "src" / "vq_hub").is_dir():  # a checkout or a Space holding this repository: no install needed
    sys.path.insert(0, str(ROOT / "src"))

from vq_hub.demo import build_demo, load_models

demo = build_demo(load_models())  # ./checkpoints, or the checkpoints beside src/

if __name__ == "__main__":
    demo.launch(show_error=True)
