"""What a notebook reads and where it writes, wherever it was opened: a clone, Colab, Kaggle.

    OUT = workdir()                          # everything a notebook writes goes under here
    text = shakespeare_text()                # tiny Shakespeare, shipped with gptkit
    data_dir = prepared_shakespeare()        # OUT/data/shakespeare/{train,val}.bin, made once
    read_config_file(preset("finetune_shakespeare.py"))

What a notebook reads comes with the package: an installed wheel holds the corpus in
`gptkit/corpus/` and the config files in `gptkit/presets/` (pyproject maps the clone's
`data/shakespeare/` and `config/` there), a clone reads them where they are. What it writes
goes to `out-notebooks/` in the folder it runs in (Jupyter, Colab and Kaggle start the kernel
there), or to wherever GPTKIT_NOTEBOOK_OUT points; never into the package or the clone's
`data/` and `models/`.
"""

import hashlib
import os
import urllib.request
from pathlib import Path

from gptkit.errors import GptkitError
from gptkit.files import atomic_write
from gptkit.model import GPT
from gptkit.prepare import prepare
from gptkit.standin import dir_or_pretrained_standin, standin_dir

OUT_ENV = "GPTKIT_NOTEBOOK_OUT"
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"

_PACKAGE = Path(__file__).resolve().parent
# (the folder inside an installed wheel, the folder in a clone), as pyproject's package-dir maps them
_SHIPPED = {
    "corpus": (_PACKAGE / "corpus", _PACKAGE.parent / "data" / "shakespeare"),
    "presets": (_PACKAGE / "presets", _PACKAGE.parent / "config"),
    "dates": (_PACKAGE / "tasks" / "dates", _PACKAGE.parent / "data" / "dates"),
    "dates_preference": (_PACKAGE / "tasks" / "dates_preference", _PACKAGE.parent / "data" / "dates_preference"),
    "plays": (_PACKAGE / "tasks" / "plays", _PACKAGE.parent / "data" / "plays"),
}


def workdir(*parts: str) -> Path:
    """The notebook's output folder (or a subfolder of it), created if needed, as an absolute path."""
    folder = Path(os.environ.get(OUT_ENV) or "out-notebooks").expanduser().resolve().joinpath(*parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _shipped(kind: str, name: str) -> Path:
    installed, clone = _SHIPPED[kind]
    return installed / name if (installed / name).is_file() else clone / name


def preset(name: str) -> Path:
    """One of the config files gptkit ships (`config/NAME` in a clone)."""
    path = _shipped("presets", name)
    if not path.is_file():
        names = sorted(p.name for folder in _SHIPPED["presets"] if folder.is_dir() for p in folder.glob("*.py"))
        raise GptkitError(f"gptkit ships no config file {name!r}; it has {', '.join(names) or 'none'}")
    return path


def task_file(task: str, name: str) -> Path:
    """A file of a task dataset gptkit ships (`data/TASK/NAME` in a clone), e.g. task_file("dates", "train.jsonl")."""
    path = _shipped(task, name) if task in _SHIPPED else Path(task) / name
    if not path.is_file():
        raise GptkitError(
            f"gptkit ships no {task}/{name}: the shipped tasks are dates and dates_preference (train/val/test.jsonl) "
            "and plays (speeches.jsonl)"
        )
    return path


def shakespeare_path() -> Path:
    """tiny Shakespeare's input.txt as gptkit ships it; downloaded (and sha256-checked) once if missing."""
    path = _shipped("corpus", "input.txt")
    if not path.is_file():
        fetch_shakespeare(path)
    return path


def shakespeare_text() -> str:
    return shakespeare_path().read_text(encoding="utf-8")


def fetch_shakespeare(path: Path) -> None:
    """Download tiny Shakespeare to `path`, refusing anything but the known file."""
    try:
        with urllib.request.urlopen(SHAKESPEARE_URL, timeout=30) as r:
            data = r.read()
    except OSError as e:
        raise GptkitError(
            f"{path} is missing and downloading it from {SHAKESPEARE_URL} failed ({e}); "
            "connect to the internet once, or copy tiny Shakespeare's input.txt there"
        ) from None
    if hashlib.sha256(data).hexdigest() != SHAKESPEARE_SHA256:
        raise GptkitError(f"the download from {SHAKESPEARE_URL} does not have the sha256 {SHAKESPEARE_SHA256}; retry")
    atomic_write(path, lambda f: f.write(data))


def prepared_shakespeare() -> Path:
    """workdir()/data/shakespeare with train.bin and val.bin, tokenized on the first call.

    Train with `dataset="shakespeare", data_root=str(prepared_shakespeare().parent)`.
    """
    folder = workdir("data", "shakespeare")
    if not ((folder / "train.bin").is_file() and (folder / "val.bin").is_file()):
        prepare(shakespeare_path(), folder, val_fraction=0.1, progress=False)
    return folder


def standin_path() -> Path:
    """Where the offline stand-in lives: workdir()/models/offline-standin-RECIPE, shared by every notebook."""
    return standin_dir(workdir("models"))


def load_or_standin(name: str, override_args: dict | None = None) -> tuple[GPT, str]:
    """`GPT.from_pretrained(name)`, or, when its weights cannot be had offline, the small stand-in.

    The stand-in (`gptkit.standin`: GPT-2's shape at 4 layers, pretrained once by gptkit on the
    train split of tiny Shakespeare, at `standin_path()`) goes through the same loading code, a
    local Hugging Face directory; the returned description says which one was loaded, so a
    notebook can announce it.
    """
    directory, unavailable = dir_or_pretrained_standin(name, prepared_shakespeare(), workdir("models"))
    description = name if unavailable is None else f"offline stand-in {directory} (pretrained by gptkit)"
    return GPT.from_pretrained(directory, override_args), description
