"""The package's shape: no import cycle (function-level imports included), short functions, one owner
of the checkpoint format, and a model.py that stands alone: plain PyTorch, no CPU kernel chosen or
measured by a forward pass."""

import ast
import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gptkit import checkpoint

PACKAGE = Path(__file__).resolve().parents[1] / "gptkit"
LONGEST = 60  # lines, decorators and docstring included


def gptkit_imports(path: Path) -> set[str]:
    """Every gptkit module `path` imports, at any depth of the file (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gptkit"):
            if node.module == "gptkit":
                found.update(f"gptkit.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("gptkit."))
    modules = {f"gptkit.{p.stem}" for p in PACKAGE.glob("*.py")}
    return {m for m in found if m in modules} - {f"gptkit.{path.stem}"}


def import_graph() -> dict[str, set[str]]:
    return {f"gptkit.{p.stem}": gptkit_imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt] if nxt in path else path + [nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_find_cycle_sees_a_cycle_through_a_function_level_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert graph["gptkit.checkpoint"], "the scan found no imports: it is broken"
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_pretrained_never_imports_the_model():
    """GPT.from_pretrained calls into pretrained; the other way round would be a cycle."""
    assert "gptkit.model" not in import_graph()["gptkit.pretrained"]


MODEL_MAY_IMPORT = ("torch", "gptkit.pretrained", "gptkit.errors")  # and the standard library


def imported_names(source: str) -> set[str]:
    """Every module `source` imports, at any depth, as named: "torch.nn", "gptkit.errors", "math"."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            module = "gptkit." * bool(node.level) + (node.module or "")  # a relative import is gptkit's
            if module in ("gptkit", "gptkit."):
                found.update(f"gptkit.{alias.name}" for alias in node.names)
            else:
                found.add(module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def beyond_the_model(source: str) -> list[str]:
    def allowed(name: str) -> bool:
        top = name.split(".")[0]
        return top in sys.stdlib_module_names or top == "torch" or name in MODEL_MAY_IMPORT

    return sorted(name for name in imported_names(source) if not allowed(name))


def test_model_imports_only_torch_pretrained_and_errors():
    """A learner reads model.py alone, as nanoGPT's: the CPU kernels and the rest stay outside."""
    assert beyond_the_model((PACKAGE / "model.py").read_text()) == []
    sample = "import math\nimport torch.nn as nn\nimport numpy\nfrom gptkit.cpu_kernels import Linear\n"
    sample += "def f():\n    from gptkit import lora, errors\n    from . import data\n"
    assert beyond_the_model(sample) == ["gptkit.cpu_kernels", "gptkit.data", "gptkit.lora", "numpy"]


# Builds a GPT (and a LoRA one), runs forward, backward and generation on the CPU, before and
# after speed_up, recording every timing the CPU layer could make; then asks for the measurement.
NO_MEASUREMENT = """
import torch
from gptkit import cpu_kernels, device
from gptkit.lora import apply_lora
from gptkit.model import GPT, GPTConfig

timed = []
for module, name in [(cpu_kernels, "_time_routes"), (device, "_time_bf16_vs_fp32")]:
    real = getattr(module, name)
    setattr(module, name, lambda *a, real=real, name=name, **k: timed.append(name) or real(*a, **k))

def run(model):
    x = torch.randint(0, 64, (2, 8))
    model.train()
    model(x, x)[1].backward()
    model.eval()
    model(x)
    model.generate(x, 3)

torch.manual_seed(0)
model = GPT(GPTConfig(block_size=16, vocab_size=64, n_layer=1, n_head=2, n_embd=16))
run(model)
run(apply_lora(model, rank=2, alpha=4))
run(cpu_kernels.speed_up(model, {"forward": True, "backward": True, "inference": True}))
print("forward passes timed:", timed)
cpu_kernels.measure_routes()
print("measure_routes timed:", timed, cpu_kernels.onednn_works())
"""


def test_no_forward_pass_measures_anything():
    """The CPU speed-ups are chosen at start-up by the programs that want them, never lazily by a
    layer: in a fresh process, forward, backward and generation time nothing; measure_routes does."""
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", NO_MEASUREMENT], capture_output=True, text=True, timeout=300, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    forward, asked = done.stdout.splitlines()
    assert forward == "forward passes timed: []"
    onednn = asked.endswith("True")
    # the recording works: where oneDNN exists, asking for the routes times its products
    assert asked.startswith("measure_routes timed: ['_time_routes', '_time_routes']" if onednn else "measure_routes")


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_no_function_is_longer_than_a_screen(path):
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1 + len(node.decorator_list)} lines)"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 + len(node.decorator_list) > LONGEST
    ]
    assert not long, f"{path.name}: {', '.join(long)}"


# Every field of `checkpoint.Checkpoint` is a key the scan looks for. Keys other dicts have too (a
# sampler's "rng", meta.json's "dtype"; add a new field's name here if other dicts use it) count
# only when what is read names a checkpoint (ckpt, checkpoint, a `load(...)` call).
SHARED_KEYS = {"model", "config", "dtype", "rng", "labels"}  # "labels": a classification meta.json's too
CHECKPOINT_NAME = re.compile(r"ckpt|checkpoint", re.IGNORECASE)


def names_a_checkpoint(node: ast.AST) -> bool:
    for sub in ast.walk(node):
        name = sub.id if isinstance(sub, ast.Name) else sub.attr if isinstance(sub, ast.Attribute) else ""
        if CHECKPOINT_NAME.search(name) or (isinstance(sub, ast.Call) and ast.unparse(sub.func).endswith("load")):
            return True
    return False


def checkpoint_key_reads(source: str) -> list[str]:
    """`x["key"]` and `x.get("key")` of a checkpoint's keys, as `line: code`."""
    keys = {f.name for f in dataclasses.fields(checkpoint.Checkpoint)}
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Subscript):
            subject, key = node.value, node.slice
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            subject, key = node.func.value, node.args[0] if node.args else None
        else:
            continue
        if not (isinstance(key, ast.Constant) and key.value in keys):
            continue
        if key.value not in SHARED_KEYS or names_a_checkpoint(subject):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_checkpoint_key_scan_sees_raw_reads():
    old = 'def f(resume, run, ckpt):\n    a = resume.ckpt.get("lora")\n    b = ckpt["optimizer"]\n'
    old += '    c = (ckpt or {}).get("config")\n    d = checkpoint.load(p).get("iter_num")\n    return state["rng"]\n'
    assert [r.split(":")[0] for r in checkpoint_key_reads(old)] == ["2", "3", "4", "5"]


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_only_checkpoint_py_indexes_a_checkpoint(path):
    """The format has one owner: everyone else reads a `checkpoint.Checkpoint`'s fields."""
    if path.name == "checkpoint.py":
        return
    reads = checkpoint_key_reads(path.read_text())
    assert not reads, f"{path.name} reads checkpoint keys; ask gptkit.checkpoint instead: {reads}"
