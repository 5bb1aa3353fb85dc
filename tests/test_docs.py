"""The documentation site stays true: it builds strictly, its Python blocks run, its commands parse, every public name
has a docstring, and the package builds as users install it.

A Python block that cannot run here (it downloads, uploads or trains for hours) carries, on the line above its fence,
`<!-- not-run: the reason -->`; the reason is required. `text` blocks (syntax summaries) are not parsed.
"""

import argparse
import importlib
import importlib.util
import inspect
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PYTHON_BLOCK = re.compile(r"^(?:<!--\s*not-run:(?P<reason>[^\n]*?)-->\n)?```python\n(?P<code>.*?)^```$", re.M | re.S)
NOT_RUN = re.compile(r"<!--\s*not-run\b(?P<rest>[^\n]*)")
SCRIPT = re.compile(r"(examples|conversion|benchmarks)/\w+\.py")
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
# The public API the reference documents: these modules' `__all__`.
DOCUMENTED_MODULES = ("vq_hub", "vq_hub.models", "vq_hub.quantizers", "vq_hub.pipelines",
                      "vq_hub.schedulers", "vq_hub.codec", "vq_hub.evaluation", "vq_hub.visualization")  # fmt: skip


def nav_pages() -> list[Path]:
    """The pages in the order of mkdocs.yml's navigation."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    pages = []

    def walk(entries):
        for entry in entries:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            walk(value) if isinstance(value, list) else pages.append(DOCS / value)

    walk(config["nav"])
    return pages


def python_blocks(text: str) -> list[tuple[str, str | None]]:
    """(code, reason it is not run, or None) for every fenced Python block."""
    blocks = [(m.group("code"), m.group("reason")) for m in PYTHON_BLOCK.finditer(text)]
    assert len(blocks) == text.count("```python"), "a ```python fence that is not at the start of a line"
    return blocks


def bash_commands(path: Path) -> list[list[str]]:
    """The words of every command in a file's ```bash blocks (continuation lines joined, comments and leading
    environment assignments dropped)."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```$", path.read_text(), flags=re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line.split(" #")[0])
            while words and ENV_ASSIGNMENT.match(words[0]):
                words = words[1:]
            if words:
                commands.append(words)
    return commands


def all_commands() -> list[tuple[str, list[str]]]:
    return [(path.name, words) for path in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
            for words in bash_commands(path)]  # fmt: skip


def test_nav_lists_every_page_and_the_pages_exist():
    pages = nav_pages()
    assert all(page.is_file() for page in pages), [page for page in pages if not page.is_file()]
    assert set(pages) == set(DOCS.glob("*.md")), "a page is missing from mkdocs.yml's nav, or nav names a non-page"


def test_mkdocs_build_strict(tmp_path):
    """No broken link or anchor, no missing reference, no docstring the API reference cannot render."""
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: pip install -e '.[docs]' to build the documentation")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:]
    rendered = set(re.findall(r'id="vq_hub\.[\w.]*?(\w+)"', (tmp_path / "site" / "api" / "index.html").read_text()))
    for module_name in DOCUMENTED_MODULES:  # every public class and function has its entry in the API reference
        module = importlib.import_module(module_name)
        for name in module.__all__:
            if inspect.isclass(getattr(module, name)) or inspect.isfunction(getattr(module, name)):
                assert name in rendered, f"the API reference lacks {module_name}.{name}"
    for page in nav_pages():
        html = "index.html" if page.stem == "index" else f"{page.stem}/index.html"
        assert (tmp_path / "site" / html).is_file(), html


def test_not_run_markers_give_a_reason_and_mark_a_python_block():
    for page in [ROOT / "README.md", *DOCS.glob("*.md")]:
        text = page.read_text()
        marked = [reason for _, reason in python_blocks(text) if reason is not None]
        for match in NOT_RUN.finditer(text):
            if text[: match.start()].count("```") % 2:  # inside a code block: an example of the marker
                continue
            assert match.group("rest").startswith(":") and match.group("rest")[1:].split("-->")[0].strip(), (
                f"{page.name}: `not-run` needs a reason: <!-- not-run: why -->")
        assert all(reason.strip() for reason in marked), page.name
        stray = [m for m in NOT_RUN.finditer(text) if text[: m.start()].count("```") % 2 == 0]
        assert len(stray) == len(marked), f"{page.name}: a not-run comment that is not right above a ```python fence"


def test_every_python_block_runs(tmp_path, monkeypatch):
    """Page after page in the navigation's order, in one scratch folder (a page may use what an earlier one saved)."""
    monkeypatch.chdir(tmp_path)
    for name in ("checkpoints", "src"):
        (tmp_path / name).symlink_to(ROOT / name)
    ran = 0
    for page in nav_pages():
        for index, (code, reason) in enumerate(python_blocks(page.read_text())):
            if reason is not None:
                continue
            try:
                exec(compile(code, f"{page.name} block {index + 1}", "exec"), {"__name__": "__docs__"})
            except Exception as error:
                raise AssertionError(f"{page.name}, Python block {index + 1} fails: {error!r}") from error
            ran += 1
    assert ran >= 10
    assert (tmp_path / "my-tokenizer" / "config.json").is_file() and (tmp_path / "eight.vqz").is_file()


def test_every_vq_hub_command_parses_and_every_subcommand_is_documented():
    from vq_hub.cli import build_parser

    parser = build_parser()
    documented = set()
    for page, words in all_commands():
        if Path(words[0]).name != "vq-hub":
            continue
        try:
            args = parser.parse_args(words[1:])
        except SystemExit as error:
            raise AssertionError(f"{page}: `{shlex.join(words)}` does not parse") from error
        documented.add(args.command)
    subcommands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    assert set(subcommands.choices) <= documented, f"undocumented: {set(subcommands.choices) - documented}"


class _Parsed(Exception):
    pass


def parse_script(script: str, arguments: list[str], monkeypatch) -> None:
    """Parse `arguments` with the script's own parser without running the script: its `parse_args()` when it has
    one, else its `main()` stopped right after the parser returns."""
    path = ROOT / script
    monkeypatch.syspath_prepend(str(path.parent))  # as when the scripts run: their folder is on sys.path
    spec = importlib.util.spec_from_file_location(f"docs_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [script, *arguments])
    if hasattr(module, "parse_args"):
        module.parse_args()
        return
    original = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
        with pytest.raises(_Parsed):
            module.main()


def test_every_script_command_parses(monkeypatch):
    """`examples/`, `conversion/` and `benchmarks/` commands, also behind `accelerate launch` or `torchrun`."""
    scripts = set()
    for page, words in all_commands():
        found = [word for word in words if SCRIPT.fullmatch(word)]
        if not found:
            continue
        script = found[0]
        with monkeypatch.context() as patch:
            try:
                parse_script(script, words[words.index(script) + 1 :], patch)
            except SystemExit as error:  # argparse exits on an unknown or malformed flag
                raise AssertionError(f"{page}: `{shlex.join(words)}` does not parse") from error
        scripts.add(script)
    assert {"examples/train_vqgan.py", "examples/encode_dataset.py", "examples/train_prior.py",
            "examples/train_diffusion.py", "examples/train_classifier.py", "conversion/convert_diffusers_vqmodel.py",
            "conversion/convert_taming_vqgan.py", "benchmarks/bench_sampling.py"} <= scripts  # fmt: skip


def test_every_make_command_is_a_target():
    makefile = (ROOT / "Makefile").read_text()
    targets = [words[1] for _, words in all_commands() if words[0] == "make"]
    assert {"demo", "test"} <= set(targets)
    for target in targets:
        assert re.search(rf"^{re.escape(target)}:", makefile, flags=re.M), f"`make {target}`: no such Makefile target"


def test_every_public_name_has_a_docstring():
    missing = []
    for module_name in DOCUMENTED_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and not (obj.__doc__ or "").strip():
                missing.append(f"{module_name}.{name}")
    assert not missing, f"public names without a docstring: {missing}"


def test_the_wheel_and_sdist_build_without_the_checkpoints(tmp_path):
    """`python -m build` as a user or a release job runs it (without isolation: no download in the tests)."""
    if importlib.util.find_spec("build") is None:
        pytest.skip("the `build` package is not installed: pip install build")
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    result = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path / "dist"),
                             str(source)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("vq_hub-*.whl"))
    assert next((tmp_path / "dist").glob("vq_hub-*.tar.gz")).is_file()
    names = zipfile.ZipFile(wheel).namelist()
    assert "vq_hub/assets/fashion_mnist_mini/train.parquet" in names and "vq_hub/cli/__init__.py" in names
    assert not [name for name in names if "checkpoints/" in name or name.endswith(".safetensors")]
    entry_points = next(name for name in names if name.endswith("entry_points.txt"))
    assert "vq-hub = vq_hub.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    assert wheel.stat().st_size < 5_000_000


# Flags of the launchers and tools the pages also name (accelerate launch, torchrun, mkdocs, python -m build).
OTHER_TOOLS_FLAGS = {"--num_processes", "--multi_gpu", "--cpu", "--num_machines", "--machine_rank", "--main_process_ip",
                     "--main_process_port", "--nproc_per_node", "--strict", "--no-isolation", "--config_file",
                     "--fsdp_transformer_layer_cls_to_wrap"}  # fmt: skip


def script_parser(path: Path, monkeypatch) -> argparse.ArgumentParser:
    """The parser a script builds, caught as it parses (nothing after that runs)."""
    monkeypatch.syspath_prepend(str(path.parent))
    spec = importlib.util.spec_from_file_location(f"docs_flags_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [str(path)])

    def catch(self, args=None, namespace=None):
        raise _Parsed(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    with pytest.raises(_Parsed) as caught:
        (getattr(module, "parse_args", None) or module.main)()
    return caught.value.args[0]


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    options = set(parser._option_string_actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                options |= option_strings(subparser)
    return options


def test_every_documented_flag_exists(monkeypatch):
    """A `--flag` named anywhere in the pages or the README (prose included) belongs to the CLI or to a script."""
    from vq_hub.cli import build_parser

    known = option_strings(build_parser()) | OTHER_TOOLS_FLAGS
    for folder in ("examples", "conversion", "benchmarks"):
        for path in sorted((ROOT / folder).glob("*.py")):
            source = path.read_text()
            if "ArgumentParser(" not in source or not re.search(r"^def (parse_args|main)\(", source, flags=re.M):
                continue
            with monkeypatch.context() as patch:
                known |= option_strings(script_parser(path, patch))
    unknown = {}
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*[a-z0-9](?![\w*-])", page.read_text()):
            if flag not in known:
                unknown.setdefault(page.name, set()).add(flag)
    assert not unknown, f"flags that no parser knows: {unknown}"


def test_readme_links_reach_pages_and_headings():
    """The README is read on GitHub, outside the site's strict build: its relative links and anchors must resolve."""

    def slug(heading: str) -> str:
        return re.sub(r"[^\w\- ]", "", heading).strip().lower().replace(" ", "-")

    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\((?!https?:)([^)#\s]+)(?:#([^)\s]+))?\)", readme)
    assert len(links) > 20
    for target, anchor in links:
        path = ROOT / target
        assert path.exists(), f"README links to {target}, which does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```$", "", path.read_text(), flags=re.M | re.S),
                                  flags=re.M)  # fmt: skip
            assert anchor in {slug(heading) for heading in headings}, f"README: {target} has no heading #{anchor}"
