"""The notebooks: every `notebooks/*.py` (the jupytext source) has an `.ipynb` twin with the same
cells, and no `.ipynb` is committed with outputs. nbval executes them (see the Makefile)."""

import hashlib
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import jupytext
import pytest
from jupytext.config import load_jupytext_config

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("*.py"))
EXPECTED = [
    "01_tokenization",
    "02_model",
    "03_pretrained",
    "04_finetuning",
    "05_sampling",
    "06_overfitting",
    "07_memory",
    "08_task_finetuning",
    "09_classification",
    "10_preference_tuning",
]


def cells(path: Path) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in jupytext.read(path).cells]


def test_the_expected_notebooks_are_there():
    assert [p.stem for p in SOURCES] == EXPECTED
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == EXPECTED


def test_jupytext_pairs_them_without_metadata_in_the_py():
    config = (ROOT / "jupytext.toml").read_text()
    assert 'formats = "ipynb,py:percent"' in config
    for py in SOURCES:
        assert not py.read_text().startswith("# ---"), f"{py.name} carries a notebook metadata header"


@pytest.mark.parametrize("py", SOURCES, ids=lambda p: p.stem)
def test_ipynb_is_in_sync_with_its_py(py):
    twin = py.with_suffix(".ipynb")
    assert twin.is_file(), f"{py.name} has no {twin.name}: run make sync-notebooks"
    assert cells(twin) == cells(py), f"{twin.name} differs from {py.name}: run make sync-notebooks"
    # Byte for byte, as `jupytext --sync` writes it (jupytext.toml: no metadata header, cell tags
    # kept), nothing reformatted.
    config = load_jupytext_config(str(NOTEBOOKS))
    assert jupytext.writes(jupytext.read(twin), fmt="py:percent", config=config) == py.read_text()


@pytest.mark.parametrize("nb", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_ipynb_has_no_outputs(nb):
    for i, cell in enumerate(jupytext.read(nb).cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{nb.name} cell {i} has outputs: clear them before committing"
            assert cell.execution_count is None, f"{nb.name} cell {i} has an execution count"


@pytest.mark.parametrize("py", SOURCES, ids=lambda p: p.stem)
def test_notebooks_import_gptkit_and_end_with_what_you_learned(py):
    text = py.read_text()
    assert "import gptkit" in text and "gptkit.smoke()" in text
    last = jupytext.read(py).cells[-1]
    assert last.cell_type == "markdown" and "What you learned" in last.source and "Try this" in last.source


SETUP_MARK = "# Setup. In a fresh Colab or Kaggle runtime"


def test_every_notebook_starts_with_the_same_setup_cell():
    setups = []
    for py in SOURCES:
        code = [c.source for c in jupytext.read(py).cells if c.cell_type == "code"]
        assert code[0].startswith(SETUP_MARK), f"{py.name}: the first code cell must be the setup cell"
        assert not any(SETUP_MARK in c for c in code[1:]), py.name
        setups.append(code[0])
    assert len(set(setups)) == 1, "the setup cells differ between notebooks: keep them identical"
    assert 'GPTKIT_SOURCE = os.environ.get("GPTKIT_SOURCE") or "git+https://github.com/' in setups[0]


@pytest.mark.parametrize("py", SOURCES, ids=lambda p: p.stem)
def test_notebooks_do_not_depend_on_the_working_directory(py):
    text = py.read_text()
    for relative in ("os.chdir", 'Path("data', 'Path("out-notebooks', '"models/', '"config/', '["config/'):
        assert relative not in text, f"{py.name} uses {relative}: read through gptkit.notebook, write under workdir()"


# --- a fresh runtime: gptkit from a wheel, the notebook alone in an empty folder ----------------


def tree(folder: Path, skip: Path | None = None) -> dict[str, int]:
    """Every file under `folder` (but not under `skip`) with its size."""
    return {
        str(p.relative_to(folder)): p.stat().st_size
        for p in folder.rglob("*")
        if p.is_file() and (skip is None or skip not in p.parents)
    }


def build_wheel(root: Path) -> Path:
    """gptkit's wheel, built offline from a copy of the sources (the build writes next to them)."""
    src = root / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.bin", "meta.json")
    for name in ("gptkit", "config"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for data in ("shakespeare", "dates", "dates_preference", "plays"):  # the folders pyproject ships as package data
        shutil.copytree(ROOT / "data" / data, src / "data" / data, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(root / "dist")]
    subprocess.run([*pip, str(src)], check=True, capture_output=True, env=os.environ | {"PIP_NO_INDEX": "1"})
    return next((root / "dist").glob("gptkit-*.whl"))


def fresh_python(root: Path) -> tuple[Path, Path]:
    """A virtual environment that sees this one's packages but not gptkit: a runtime lacking only gptkit.

    Its Jupyter kernel is its own Python (JUPYTER_PATH below), so the setup cell installs there.
    """
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    # This environment's packages without gptkit: an editable install (make test's) would make pip
    # see gptkit as installed already, so the shared folder links to every entry but gptkit's.
    shared = root / "runtime-packages"
    shared.mkdir()
    folders = dict.fromkeys(
        p for p in [*site.getsitepackages(), *sys.path] if p.endswith(("site-packages", "dist-packages"))
    )
    for entry in (e for d in folders if Path(d).is_dir() for e in Path(d).iterdir()):
        if not entry.name.lower().startswith(("gptkit", "__editable__")) and not (shared / entry.name).exists():
            (shared / entry.name).symlink_to(entry)
    (purelib / "runtime.pth").write_text(f"{shared}\n")
    spec = root / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "fresh", "language": "python"}))
    return python, purelib


RUN_NOTEBOOK = """
import sys, nbformat, nbclient
nb = nbformat.read(sys.argv[1], as_version=4)
nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": sys.argv[2]}}).execute()
nbformat.write(nb, sys.argv[3])
"""


def test_notebooks_run_alone_in_a_fresh_runtime_from_a_wheel(tmp_path):
    """01 and 03 copied alone into an empty folder, as Colab or Kaggle has them, with gptkit only as a wheel:
    the setup cell installs it (nothing else), the notebooks read what the package ships, and write
    nothing outside their output folder, nor into the package."""
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"gptkit/notebook.py", "gptkit/corpus/input.txt", "gptkit/presets/finetune_shakespeare.py"} <= names
    assert {"gptkit/tasks/dates/test.jsonl", "gptkit/tasks/dates_preference/test.jsonl"} <= names  # 08, 10
    assert "gptkit/tasks/plays/speeches.jsonl" in names  # 09
    assert not any(n.endswith((".bin", "meta.json")) for n in names)
    python, purelib = fresh_python(tmp_path)
    home, folder = tmp_path / "home", tmp_path / "content"  # /content: where Colab runs
    home.mkdir()
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GPTKIT_NOTEBOOK_OUT", "JUPYTER_PATH")}
    env |= {
        "GPTKIT_SMOKE": "1",
        "GPTKIT_SOURCE": str(wheel),
        "HOME": str(home),
        "JUPYTER_PATH": str(tmp_path / "jupyter"),
        "PIP_NO_INDEX": "1",  # everything but gptkit is there already: pip must not need to fetch anything
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "MPLBACKEND": "agg",
    }
    check = [str(python), "-c", "import importlib.util; print(importlib.util.find_spec('gptkit'))"]
    assert subprocess.run(check, cwd=folder, env=env, capture_output=True, text=True).stdout.strip() == "None"
    before = tree(purelib)

    outputs = {}
    for name in ("01_tokenization", "03_pretrained"):
        shutil.copy(NOTEBOOKS / f"{name}.ipynb", folder)
        before_run = tree(folder, skip=folder / "out-notebooks")
        executed = tmp_path / f"{name}.executed.ipynb"
        run = [str(python), "-c", RUN_NOTEBOOK, str(folder / f"{name}.ipynb"), str(folder), str(executed)]
        result = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        # nothing written outside the output folder: the folder holds what it held, plus out-notebooks/
        assert tree(folder, skip=folder / "out-notebooks") == before_run, name
        setup = next(c for c in jupytext.read(executed).cells if c.cell_type == "code")
        outputs[name] = "".join(o.get("text", "") for o in setup.outputs)
    assert (
        outputs["01_tokenization"].strip()
        == f"installed gptkit from {wheel}, with what this runtime lacked of its dependencies"
    )
    assert outputs["03_pretrained"].strip() == "gptkit is importable already: nothing to install"

    located = subprocess.run([str(python), "-c", "import gptkit; print(gptkit.__file__)"], cwd=folder, env=env,
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert Path(located).is_relative_to(purelib) and not Path(located).is_relative_to(ROOT), located
    added = {Path(name).parts[0] for name in set(tree(purelib)) - set(before)}
    assert added == {"gptkit", "gptkit-0.1.0.dist-info"}, f"pip installed more than gptkit: {sorted(added)}"
    # nothing written into the package: every file in it is one pip installed (RECORD lists them)
    record = (purelib / "gptkit-0.1.0.dist-info" / "RECORD").read_text().splitlines()
    installed = {line.rsplit(",", 2)[0] for line in record}
    assert {f"gptkit/{name}" for name in tree(Path(located).parent)} <= installed

    out = folder / "out-notebooks"
    assert (out / "data" / "shakespeare" / "train.bin").stat().st_size == 2 * 301_966
    assert [p.name for p in (out / "models").glob("offline-standin-*/config.json")] == ["config.json"]
    assert (out / "eval-random").is_dir()


# --- gptkit.notebook: what a notebook reads, where it writes -------------------------------------


def test_workdir_is_out_notebooks_where_the_notebook_runs_unless_moved(tmp_path, monkeypatch):
    from gptkit.notebook import OUT_ENV, workdir

    monkeypatch.delenv(OUT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert workdir() == tmp_path / "out-notebooks" and workdir().is_dir()
    monkeypatch.setenv(OUT_ENV, str(tmp_path / "elsewhere"))
    assert workdir("runs", "a") == tmp_path / "elsewhere" / "runs" / "a" and workdir("runs", "a").is_dir()


def test_the_shipped_corpus_and_presets():
    from gptkit.config import read_config_file
    from gptkit.errors import GptkitError
    from gptkit.notebook import SHAKESPEARE_SHA256, preset, shakespeare_path

    assert hashlib.sha256(shakespeare_path().read_bytes()).hexdigest() == SHAKESPEARE_SHA256
    assert read_config_file(preset("finetune_shakespeare.py"))["init_from"] == "gpt2-xl"
    with pytest.raises(GptkitError, match="finetune_shakespeare_cpu.py"):
        preset("finetune_shakespeare_gpu.py")


# --- what a learner sees: kernels named, figures shown ---------------------------------------------


@pytest.mark.parametrize("nb", sorted(NOTEBOOKS.rglob("*.ipynb")), ids=lambda p: str(p.relative_to(NOTEBOOKS)))
def test_every_notebook_names_its_kernel(nb):
    """Without a kernelspec, JupyterLab asks which kernel to start; Colab guesses."""
    spec = json.loads(nb.read_text())["metadata"].get("kernelspec")
    assert spec == {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}, nb.name


FIGURE_NOTEBOOK_CELLS = [
    "import matplotlib.pyplot as plt\n\ndef plot_closed():\n    fig = plt.figure()\n    fig.gca().plot([1, 2])\n"
    "    plt.close(fig)\n    return fig",  # a helper that draws, defined: no figure yet
    "plt.figure()\nplt.plot([1, 3])",  # the inline backend shows an open figure when the cell ends
    "plot_closed()",  # a closed figure as the last expression: shown
    "fig = plot_closed()\ndisplay(fig)\nassert fig",  # displayed: shown
    "plot_closed()\nassert 1",  # drawn and lost: the defect
]


def test_the_notebook_lane_fails_a_figure_cell_that_shows_no_figure(tmp_path):
    """The root conftest.py's hook, under nbval as make test runs it, fails the one cell that loses its figure."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in FIGURE_NOTEBOOK_CELLS]
    nbformat.write(nb, tmp_path / "figures.ipynb")
    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    args = ["--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider", "-q", "-rf", "figures.ipynb"]
    run = subprocess.run([sys.executable, "-m", "pytest", *args], cwd=tmp_path, env=env, capture_output=True, text=True)
    failed = [line for line in run.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and "figures.ipynb::Cell 4" in failed[0], run.stdout[-3000:]
    assert "draws a figure but shows none" in run.stdout and "4 passed" in run.stdout


RUN_CONFIG_CALLS = {"TrainConfig", "parse_args", "replace", "read_config_file"}


def run_config_bindings(source: str) -> set[str]:
    """Names a cell binds, outside any function, to a run's settings (TrainConfig(...), parse_args(...), ...)."""
    import ast

    names, todo = set(), list(ast.parse(source).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.Lambda):
            continue
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in RUN_CONFIG_CALLS:
                names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        todo.extend(ast.iter_child_nodes(node))
    return names


@pytest.mark.parametrize("py", SOURCES, ids=lambda p: p.stem)
def test_a_run_config_is_bound_in_one_cell_only(py):
    """A later cell that rebinds a run's config (07's GPU table once did, to `lora_cfg`) makes an
    earlier cell, re-run, read or export another run than the one it trained."""
    seen: dict[str, int] = {}
    for i, cell in enumerate(jupytext.read(py).cells):
        if cell.cell_type != "code":
            continue
        for name in run_config_bindings(cell.source):
            assert name not in seen, f"{py.name}: cells {seen[name]} and {i} both bind {name!r} to a run's config"
            seen[name] = i
