"""The notebooks: every `notebooks/*.py` (the jupytext source) has an `.ipynb` twin with the same
cells, and no `.ipynb` is committed with outputs. nbval executes them (see the Makefile)."""

from pathlib import Path

import jupytext
import pytest

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
]


def cells(path: Path) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in jupytext.read(path).cells]


def test_the_seven_notebooks_are_there():
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
    # Byte for byte, as `jupytext --to py:percent` writes it: no metadata header, nothing reformatted.
    assert jupytext.writes(jupytext.read(twin), fmt="py:percent") == py.read_text()


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
