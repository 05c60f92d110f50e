"""Where GPT-2's weights come from: the four sizes, the Hugging Face hub and cache, local directories.

`find_weights` turns one of OpenAI's four sizes (from the hub, or its local cache when offline)
or a local directory in Hugging Face GPT-2 format into a directory; `read_config` and
`read_weights` read it, with the checks that gptkit's GPT reproduces it exactly. Turning those
tensors into a model is `gptkit.model.GPT.from_pretrained`'s job, so this module never imports
the model. `build_offline_standin` writes a small random-weight GPT-2 of the stand-in's shape
(`dir_or_standin` when the real weights cannot be had); `gptkit.standin` pretrains it into the
offline stand-in the demo and the notebooks use.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from gptkit.errors import GptkitError

# The four sizes OpenAI released, by their names on the hub.
GPT2_SIZES = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),  # 124M
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),  # 355M
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),  # 774M
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),  # 1558M
}
HUB_REPOS = {name: f"openai-community/{name}" for name in GPT2_SIZES}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Weights stored as Conv1D (in_features, out_features) in HF, nn.Linear (out, in) here.
TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


class WeightsUnavailable(GptkitError):
    """The named GPT-2 weights are neither cached nor downloadable (typically: offline)."""


HUB_CONNECT_TIMEOUT = 5.0  # seconds


def _cap_connect_timeout(request) -> None:
    """httpx request hook: give requests without a connect timeout HUB_CONNECT_TIMEOUT."""
    timeout = dict(request.extensions.get("timeout") or {})
    if timeout.get("connect") is None:
        request.extensions = {**request.extensions, "timeout": {**timeout, "connect": HUB_CONNECT_TIMEOUT}}


def _hub_session_with_connect_timeout() -> None:
    from huggingface_hub import get_session

    session = get_session()
    hooks = getattr(session, "event_hooks", None)  # httpx-based huggingface_hub (>= 1.0) only
    if hooks is not None and _cap_connect_timeout not in hooks["request"]:
        hooks["request"].append(_cap_connect_timeout)


def _download_failure(repo: str, error: Exception) -> str:
    """Why downloading `repo` failed and what to do, in one line (huggingface_hub's errors are paragraphs)."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    hub, login = constants.ENDPOINT, "log in with `hf auth login` or set HF_TOKEN"
    # "not in the cache" wraps the hub's answer when nothing (or only part) was cached before
    cause = (error.__cause__ or error.__context__ or error) if isinstance(error, LocalEntryNotFoundError) else error
    status = getattr(getattr(cause, "response", None), "status_code", None)
    detail = type(cause).__name__ + (f": {str(cause).splitlines()[0]}" if str(cause).strip() else "")
    if isinstance(cause, GatedRepoError):
        return f"{repo} is gated on {hub}: accept its terms on its page, then {login}"
    if isinstance(cause, RepositoryNotFoundError):
        return f"{hub} has no repository {repo}: check HF_ENDPOINT (a mirror may lack it), or {login} if it is private"
    if isinstance(cause, HfHubHTTPError) and status in (401, 403):
        return f"{hub} refused access to {repo} (HTTP {status}): {login} with a valid token"
    if isinstance(cause, HfHubHTTPError):
        return f"{hub} answered HTTP {status} for {repo}: try again later, or set HF_ENDPOINT to a mirror"
    if isinstance(cause, OfflineModeIsEnabled) or constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set: unset it to download them once (they are cached for later)"
    if isinstance(error, LocalEntryNotFoundError):
        return f"the hub at {hub} cannot be reached ({detail}): connect once (they are cached for later)"
    return f"downloading {repo} from {hub} failed ({detail}); nothing partial was kept: run again to retry"


def resolve_hub_dir(name: str) -> Path:
    """A local directory with config.json and model.safetensors for a named size (cache or download).

    The download goes to the Hugging Face cache through `HF_ENDPOINT` (the hub, or a mirror).
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo, patterns = HUB_REPOS[name], ["config.json", "model.safetensors"]
    try:
        return Path(snapshot_download(repo, allow_patterns=patterns, local_files_only=True))
    except LocalEntryNotFoundError:
        pass  # not cached (or cached only in part): download below
    _hub_session_with_connect_timeout()
    try:
        return Path(snapshot_download(repo, allow_patterns=patterns))
    except Exception as e:  # each of huggingface_hub's failures, said in one line below
        reason = _download_failure(repo, e)
    raise WeightsUnavailable(
        f"cannot load {name!r}: its weights are not in the Hugging Face cache and {reason}; "
        "or pass a local directory in Hugging Face GPT-2 format (config.json + model.safetensors)"
    )


def _read_hf_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        raise GptkitError(f"{directory} has no config.json: it is not a Hugging Face model directory")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GptkitError(f"{path} is not valid JSON ({e}): copy the model's config.json again") from None
    kind = cfg.get("model_type") if isinstance(cfg, dict) else None
    if kind is None:
        raise GptkitError(f"{path} names no model_type: it is not a Hugging Face model's config")
    if kind != "gpt2":
        raise GptkitError(f"{directory} holds a {kind!r} model; gptkit loads GPT-2 models only")
    if cfg.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise GptkitError(
            f"{directory} uses activation {cfg['activation_function']!r}; gptkit's GPT uses GPT-2's tanh GELU"
        )
    if (
        cfg.get("layer_norm_epsilon", 1e-5) != 1e-5
        or cfg.get("scale_attn_by_inverse_layer_idx")
        or cfg.get("reorder_and_upcast_attn")
    ):
        raise GptkitError(f"{directory} changes GPT-2's LayerNorm or attention; gptkit's GPT cannot load it exactly")
    return cfg


def gpt2_size(name: str) -> dict:
    """The GPTConfig arguments of one of the four named sizes."""
    if name not in GPT2_SIZES:
        raise GptkitError(f"unknown model {name!r}: choose one of {', '.join(GPT2_SIZES)} or a local directory")
    return dict(block_size=1024, vocab_size=50257, bias=True, **GPT2_SIZES[name])


def find_weights(name_or_path: str | os.PathLike) -> Path:
    """The local directory holding a GPT-2's weights: the path itself, or a named size's cache / download."""
    name = str(name_or_path)
    if Path(name).is_dir():
        return Path(name)
    if name not in GPT2_SIZES:
        raise GptkitError(
            f"{name!r} is neither a directory nor a GPT-2 size: use {', '.join(GPT2_SIZES)} or a local HF directory"
        )
    return resolve_hub_dir(name)


def read_config(directory: str | os.PathLike) -> dict:
    """The GPTConfig arguments of a Hugging Face GPT-2 directory, after checking gptkit can load it exactly."""
    cfg = _read_hf_config(Path(directory))
    return dict(
        block_size=cfg["n_positions"],
        vocab_size=cfg["vocab_size"],
        n_layer=cfg["n_layer"],
        n_head=cfg["n_head"],
        n_embd=cfg["n_embd"],
        bias=True,
    )


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The tensors of a Hugging Face GPT-2 directory, under its own names and layouts."""
    for name in WEIGHT_FILES:
        path = directory / name
        if not path.is_file():
            continue
        try:
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file

                try:
                    # pread, not mmap: the file's pages would otherwise count as resident
                    # memory on top of the tensors read from them (6 GB more for gpt2-xl).
                    return load_file(path, backend="pread")
                except TypeError:  # safetensors < 0.8 has no backend choice
                    return load_file(path)
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise GptkitError(f"{path} could not be read ({type(e).__name__}: {e}); it may be truncated") from None
    raise GptkitError(f"{directory} has no {' or '.join(WEIGHT_FILES)}")


# A GPT-2-shaped model small enough to finetune on a laptop CPU in minutes; random weights.
STANDIN_SIZE = dict(n_layer=4, n_head=4, n_embd=128, n_positions=1024)


def build_offline_standin(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write a small random-weight GPT-2 in Hugging Face format with `transformers` (once).

    Written beside `out_dir` and renamed into place: two notebooks that build it at the same time
    never load each other's half-written files.
    """
    out = Path(out_dir)
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    from transformers import GPT2Config, GPT2LMHeadModel

    out.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    torch.manual_seed(seed)
    GPT2LMHeadModel(GPT2Config(**STANDIN_SIZE)).save_pretrained(building)
    try:
        building.rename(out)  # over an empty folder too; refused if one is there already
    except OSError:
        shutil.rmtree(building)  # another process finished first: its copy is the same
    return out


def dir_or_standin(
    name: str, standin_dir: str | os.PathLike = "models/offline-standin"
) -> tuple[Path, WeightsUnavailable | None]:
    """The local directory of `name`'s weights, or of the small stand-in when they cannot be had.

    The second value is None for the real weights, else the reason they were unavailable.
    """
    try:
        return resolve_hub_dir(name), None
    except WeightsUnavailable as e:
        return build_offline_standin(standin_dir), e
