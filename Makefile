# One command each, on a fresh machine: `make demo` (install + generate images from the shipped checkpoints) and
# `make test` (install + all tests). `make quickstart` trains a tiny tokenizer from scratch; `make docs` builds the
# documentation site into site/.
# TORCH_SPEC picks the torch to install first (this project's machines have a local CPU build of torch==2.13.0);
# elsewhere use e.g. `make test TORCH_SPEC=torch` or `TORCH_SPEC=` to keep the torch already in the venv.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python

.PHONY: install demo quickstart test test-fast docs bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	if [ -n "$(TORCH_SPEC)" ]; then $(PY) -m pip install --quiet "$(TORCH_SPEC)"; fi
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/vq-hub generate --model checkpoints/fashion-mnist-diffusion --num-steps 16 --out outputs/diffusion_samples.png
	$(VENV)/bin/vq-hub generate --model checkpoints/fashion-mnist-autoregressive --out outputs/autoregressive_samples.png

quickstart: install
	$(PY) examples/quickstart_tokenizer.py --output_dir outputs/quickstart

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

docs: install
	$(VENV)/bin/mkdocs build --strict

bench: install
	$(PY) -m pip install --quiet vector-quantize-pytorch
	$(PY) benchmarks/bench_quantizer.py
	$(PY) benchmarks/bench_train_step.py
	$(PY) benchmarks/bench_sampling.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
