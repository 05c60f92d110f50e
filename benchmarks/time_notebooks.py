"""How long the notebooks take with GPT-2 124M, on a machine that cannot download it.

    python benchmarks/time_notebooks.py                       # notebooks 03-06, in this order
    python benchmarks/time_notebooks.py 05_sampling --work /tmp/nb   # one, in a folder of its own

A GPT-2 124M of random weights (built once with transformers, cached under models/) is served
as `openai-community/gpt2` by the local hub of the tests (tests/helpers/hub_server.py), so the notebooks
take their real-weights branches at full size, one after the other in one work folder (05 reads
what 04 wrote there), through a Jupyter kernel. Prints each code cell's seconds and each
notebook's total. A cell whose claim needs GPT-2's own weights fails with random ones: it is
reported and the notebook goes on, so the times are complete but nothing here checks a claim
(`make test` does, on a small trained model). docs/notebooks.md's table holds the figures.
"""

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "helpers")]

import torch  # noqa: E402
from hub_server import HubServer, hub_env  # noqa: E402

from benchmarks import common  # noqa: E402
from gptkit.pretrained import HUB_REPOS  # noqa: E402

RANDOM_GPT2 = ROOT / "models" / "gpt2-124m-random-weights"
# the others load none
REAL_WEIGHTS_NOTEBOOKS = ["03_pretrained", "04_finetuning", "05_sampling", "06_overfitting", "09_classification"]


def random_gpt2(folder: Path = RANDOM_GPT2) -> Path:
    if not (folder / "model.safetensors").is_file():
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        GPT2LMHeadModel(GPT2Config()).save_pretrained(folder)  # GPT-2 124M's config, random weights
    return folder


def cell_seconds(cell) -> float:
    timing = cell.metadata.get("execution", {})
    start, end = (datetime.fromisoformat(timing[k].rstrip("Z")) for k in ("iopub.execute_input", "shell.execute_reply"))
    return (end - start).total_seconds()


def run_notebook(stem: str, folder: Path) -> float:
    import jupytext
    from nbclient import NotebookClient

    notebook = jupytext.read(ROOT / "notebooks" / f"{stem}.py")
    start = time.monotonic()
    NotebookClient(notebook, timeout=1800, kernel_name="python3", allow_errors=True).execute(cwd=str(folder))
    total = time.monotonic() - start
    for number, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        failed = f"  FAILED {errors[0]['ename']}: {errors[0]['evalue'][:80]}" if errors else ""
        print(f"{stem} cell {number:2d} {cell_seconds(cell):7.1f} s  {cell.source.splitlines()[0][:60]}{failed}")
    print(f"{stem}: {total:.0f} s in all", flush=True)
    return total


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", default=REAL_WEIGHTS_NOTEBOOKS, help="notebook stems, in order")
    parser.add_argument("--work", type=Path, help="the folder the notebooks run in (default: a new temporary one)")
    args = parser.parse_args(argv)
    unknown = [stem for stem in args.notebooks if not (ROOT / "notebooks" / f"{stem}.py").is_file()]
    if unknown:
        parser.error(f"no notebook {', '.join(unknown)} in notebooks/: name them by stem, e.g. 04_finetuning")
    work = args.work or Path(tempfile.mkdtemp(prefix="gptkit-notebook-times-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {common.describe_machine(torch.device('cpu'))}; notebooks run in {work}")
    with HubServer({HUB_REPOS["gpt2"]: random_gpt2()}, lifetime=4 * 3600) as hub:
        pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        os.environ.update(hub_env(hub.url, work, MPLBACKEND="Agg", PYTHONPATH=pythonpath))
        os.environ.pop("GPTKIT_SMOKE", None)  # full size: the point of this measurement
        for stem in args.notebooks:
            run_notebook(stem, work)


if __name__ == "__main__":
    main()
