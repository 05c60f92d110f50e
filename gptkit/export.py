"""Export a run's best model as a Hugging Face GPT-2 directory, or its LoRA adapters as a peft one.

    python -m gptkit.export OUT_DIR DEST             # the model, LoRA merged, ready for transformers
    python -m gptkit.export OUT_DIR DEST --adapters  # a LoRA run's adapters only, ready for peft
    python -m gptkit.export PEFT_DIR DEST            # a peft adapter merged into its base

Reads OUT_DIR/ckpt.pt (the best model by val loss; latest.pt when val never improved). The model
export writes config.json, model.safetensors, GPT-2's tokenizer (from the same verified vocabulary
files gptkit tokenizes with), generation_config.json (<|endoftext|> ends a sample and pads) and
a README.md model card, so `pipeline("text-generation", model=DEST)` works as is, and so does
`--init_from=DEST`. `--adapters` writes adapter_config.json and adapter_model.safetensors (see
`gptkit.peft_format`), the tokenizer and the card: megabytes, not the gigabytes of a merged copy. DEST must be
new or empty: nothing is overwritten, and DEST appears only once it is complete (written beside
it, then renamed).
"""

import inspect
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from gptkit import checkpoint, objectives, sources
from gptkit.config import help_table
from gptkit.data import read_meta
from gptkit.errors import GptkitError, run_cli
from gptkit.files import replacing, write_failed
from gptkit.lora import lora_state_dict, merge_lora
from gptkit.model import GPT, GPTConfig
from gptkit.peft_format import is_peft_dir, peft_base_name, to_peft_dir
from gptkit.pretrained import GPT2_SIZES, TRANSPOSED
from gptkit.tokenizer import EOT_ID, EOT_TOKEN, get_encoding, vocab_files

USAGE = (
    "usage: python -m gptkit.export OUT_DIR DEST [--adapters]  (a run's folder or a peft adapter folder, "
    "and a new folder for the Hugging Face model; --adapters: a LoRA run's adapters as a peft folder)"
)

HELP_ROWS = [
    ("OUT_DIR", "a run's folder (its best checkpoint) or a peft adapter folder"),
    ("DEST", "a new folder for the Hugging Face model (config.json, model.safetensors, tokenizer files)"),
    ("--adapters", "write only a LoRA run's adapters, as a peft folder, instead of the merged model"),
]


def hf_config(config: GPTConfig, labels: list | None = None):
    """GPT-2's config for transformers; with `labels`, a GPT2ForSequenceClassification's: its label
    names, and <|endoftext|> as the padding it finds each text's last real token by."""
    from transformers import GPT2Config

    classifier = {}
    if labels:
        classifier = dict(
            architectures=["GPT2ForSequenceClassification"],
            id2label={i: str(name) for i, name in enumerate(labels)},
            label2id={str(name): i for i, name in enumerate(labels)},
            pad_token_id=EOT_ID,
        )
    return GPT2Config(
        **classifier,
        vocab_size=config.vocab_size,
        n_positions=config.block_size,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        activation_function="gelu_new",
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        layer_norm_epsilon=1e-5,
        bos_token_id=50256,
        eos_token_id=50256,
    )


def to_hf_state_dict(model: GPT, release: bool = False) -> dict[str, torch.Tensor]:
    """`model`'s weights under Hugging Face GPT-2 names and layouts.

    The block matrices are stored transposed there (Conv1D), so each is copied. With
    `release=True` each original is freed as soon as its copy exists, so the weights are held
    once plus one matrix, not twice (6 GB less for gpt2-xl); `model` is left unusable.
    """
    state = {}
    # Parameters one at a time (a state_dict kept alive here would hold every original until the
    # end). The tied head comes once, as transformer.wte.weight: HF rebuilds lm_head from it.
    for key, param in model.named_parameters():
        transposed = key.endswith(TRANSPOSED)
        state[key] = (param.detach().t() if transposed else param.detach()).contiguous().cpu()
        if release and transposed:
            param.data = torch.empty(0, dtype=param.dtype, device=param.device)
    return state


def export_hf(model: GPT, out_dir: str | os.PathLike, release: bool = False, labels: list | None = None) -> Path:
    """Write `model` as a Hugging Face GPT-2 directory (config.json + model.safetensors); a classifier
    (`labels`, its head `score` included) as a GPT2ForSequenceClassification directory.

    `release=True`: free the model's weights while converting them (see `to_hf_state_dict`).
    """
    from safetensors.torch import save_file

    if not model.config.bias:
        raise GptkitError("export_hf needs bias=True: Hugging Face GPT-2 layers always have biases")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_failed(out, e) from None
    # Each file is replaced whole, and a full disk is one clear line (gptkit.files.replacing).
    with replacing(out / "model.safetensors") as tmp:
        save_file(to_hf_state_dict(model, release), tmp, metadata={"format": "pt"})
    with replacing(out / "config.json") as tmp:
        hf_config(model.config, labels).to_json_file(tmp)
    return out


def check_dest(dest: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise GptkitError(f"{dest} is a file: choose a new folder for the export")
    if dest.is_dir() and any(dest.iterdir()):
        raise GptkitError(f"{dest} exists and is not empty: choose a new folder, or empty it first")


# --- the files beside the weights -------------------------------------------------------------
def hf_tokenizer(max_length: int):
    """GPT-2's tokenizer for transformers, from gptkit's verified vocabulary files, checked against tiktoken."""
    from transformers import GPT2TokenizerFast

    encoder_json, vocab_bpe = vocab_files()
    # transformers 5 takes the files as vocab= / merges=; 4.x as vocab_file= / merges_file= (and 5
    # silently builds an empty tokenizer from those), so ask the signature which it is.
    if "vocab" in inspect.signature(GPT2TokenizerFast.__init__).parameters:
        files = {"vocab": encoder_json, "merges": vocab_bpe}
    else:
        files = {"vocab_file": encoder_json, "merges_file": vocab_bpe}
    tok = GPT2TokenizerFast(**files, model_max_length=max_length, clean_up_tokenization_spaces=False)
    probe = "ROMEO: What, ho!  Thou'rt 42 \u00fcber-wise\n\n" + EOT_TOKEN + " done."
    if tok(probe)["input_ids"] != get_encoding().encode(probe, allowed_special="all"):
        raise GptkitError(
            "this transformers version built a GPT-2 tokenizer that disagrees with gptkit's; "
            "install transformers>=4.40 (pip install -U transformers)"
        )
    return tok


def write_hf_extras(dest: Path, max_length: int, generation: bool = True, pad: bool = False) -> None:
    """The tokenizer and (`generation`) generation_config.json, <|endoftext|> as end and pad token, into `dest`.

    `pad`: the tokenizer pads with <|endoftext|> (on the right), so a classifier's pipeline can batch texts.
    """
    from transformers import GenerationConfig

    tok = hf_tokenizer(max_length)
    if pad:
        tok.pad_token = EOT_TOKEN
    try:
        tok.save_pretrained(dest)
        if generation:
            GenerationConfig(bos_token_id=EOT_ID, eos_token_id=EOT_ID, pad_token_id=EOT_ID).save_pretrained(dest)
    except OSError as e:
        raise write_failed(dest, e) from None


# --- the model card ---------------------------------------------------------------------------
def describe_base(base: str | None, model: GPT) -> str:
    c = model.config
    shape = f"{c.n_layer} layers, {c.n_head} heads, width {c.n_embd}, context {c.block_size}"
    size = f"{shape}, {model.num_params() / 1e6:.1f}M parameters"
    if base is None:
        return f"none: trained from scratch ({size})"
    if base == "resume":  # a full finetune's checkpoint keeps no base reference, and resuming overwrote it
        return f"not recorded (the run was resumed); GPT-2, {size}"
    name = f"`{base}` (`{peft_base_name(base)}` on the Hugging Face hub)" if base in GPT2_SIZES else f"`{base}`"
    return f"{name}: GPT-2, {size}"


def run_base(ckpt: checkpoint.Checkpoint | None, lora: dict | None) -> str | None:
    """What the exported model was finetuned from: a GPT-2 size, a folder, "resume", or None (scratch)."""
    if lora:
        return lora["base"]
    init_from = ckpt.config.get("init_from") if ckpt is not None else None
    return None if init_from in (None, "scratch") else init_from


def describe_data(cfg: dict) -> str:
    data_dir = Path(cfg.get("data_root", "data")) / cfg.get("dataset", "?")
    meta = read_meta(data_dir)
    if "train_tokens" not in meta:
        return f"`{cfg.get('dataset')}` ({data_dir}; its meta.json, with the token counts, was not found)"
    return (
        f"`{cfg.get('dataset')}` ({data_dir}): {meta['train_tokens']:,} training and "
        f"{meta.get('val_tokens', 0):,} validation tokens (GPT-2 tokenizer)"
    )


def describe_training(ckpt: checkpoint.Checkpoint) -> str:
    cfg = ckpt.config
    lr = f"learning rate {cfg.get('learning_rate'):g}"
    if cfg.get("decay_lr"):
        lr += f" (warmup {cfg.get('warmup_iters')}, cosine decay to {cfg.get('min_lr'):g})"
    return (
        f"{ckpt.iter_num} iterations of {cfg.get('batch_size')} x {cfg.get('gradient_accumulation_steps')} "
        f"x {cfg.get('block_size')} (batch_size x gradient_accumulation_steps x block_size; "
        f"{ckpt.tokens_seen:,} tokens trained on, padding left out), {lr}, "
        f"weight decay {cfg.get('weight_decay')}, dropout {cfg.get('dropout')}, {ckpt.dtype or 'float32'}"
    )


def card_facts(
    ckpt: checkpoint.Checkpoint | None, lora: dict | None, model: GPT, source: Path, adapters: bool
) -> list[str]:
    """The card's bullet points: base, data, training, LoRA, loss."""
    facts = [f"**Base model:** {describe_base(run_base(ckpt, lora), model)}"]
    if ckpt is None:  # a peft adapter merged: what its config says is all there is
        facts.append(f"**Adapter:** the peft LoRA adapter in `{source}`, merged into the base")
    else:
        cfg = ckpt.config
        facts += [f"**Dataset:** {describe_data(cfg)}", f"**Training:** {describe_training(ckpt)}"]
        if lora and is_peft_dir(cfg.get("init_from", "")):
            facts.append(f"**Adapters started from:** the peft adapter in `{cfg['init_from']}`")
    if lora:
        how = "as peft adapters (the base is not included)" if adapters else "merged into these weights"
        facts.append(
            f"**LoRA:** rank {lora['rank']}, alpha {lora['alpha']:g}, dropout {lora['dropout']:g} "
            f"on {lora['targets']}, {how}"
        )
    best = ckpt.best_val_loss if ckpt is not None else None
    if ckpt is not None and ckpt.labels:
        facts.append(f"**Labels:** {', '.join(map(str, ckpt.labels))}")
        if best is not None and math.isfinite(best):  # the classifier's objective reads its score back
            objective = objectives.Classification(ckpt.config.get("best_by", "accuracy"))
            facts.append(f"**Best {objective.followed}:** {objective.unscore(best):.4f}")
    elif best is not None and math.isfinite(best):
        facts.append(f"**Best val loss:** {best:.4f} (perplexity {math.exp(best):.2f})")
    elif ckpt is not None:
        facts.append("**Best val loss:** not measured (the run never evaluated)")
    return facts


def model_card(
    facts: list[str], dest: Path, base: str | None, adapters: bool, context: int, labels: list | None = None
) -> str:
    hub_base = peft_base_name(base) if base in GPT2_SIZES else None
    library = "peft" if adapters else "transformers"
    task = "text-classification" if labels else "text-generation"
    front = ["---", f"library_name: {library}", f"pipeline_tag: {task}"]
    front += [f"base_model: {hub_base}"] * bool(hub_base) + ["tags: [gptkit, gpt2]", "---", ""]
    quoted = json.dumps(str(dest))  # a Python string literal, whatever the path holds
    if adapters:
        load = [
            "from peft import PeftModel",
            "from transformers import AutoTokenizer, GPT2LMHeadModel, pipeline",
            "",
            f"model = PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained({json.dumps(peft_base_name(base))}), "
            f"{quoted})",
            f'generator = pipeline("text-generation", model=model, tokenizer=AutoTokenizer.from_pretrained({quoted}))',
        ]
    else:
        load = ["from transformers import pipeline", "", f'generator = pipeline("{task}", model={quoted})']
    new = min(50, context // 2)  # transformers refuses to generate past the model's context
    if labels and not adapters:
        load[-1] = f'classifier = pipeline("{task}", model={quoted})'
        load.append('print(classifier(["some text", "another text"], top_k=None))')
    elif labels:
        load = [f"# a {task} adapter: load it on GPT2ForSequenceClassification (num_labels={len(labels)})"]
    else:
        load.append(f'print(generator("ROMEO:", max_new_tokens={new}, do_sample=False)[0]["generated_text"])')
    gptkit_use = (
        f"sample it with `python -m gptkit.sample --init_from={dest}`, finetune it further with `--init_from={dest}`"
    )
    if labels:
        gptkit_use = (
            f"score it with `python -m gptkit.evaluate --init_from={dest} --dataset=NAME`, finetune it further "
            f"with `--init_from={dest}` on a dataset of the same labels"
        )
    title = "LoRA adapters for GPT-2" if adapters else "GPT-2"
    body = [f"# {dest.name}", "", f"{title}, exported by gptkit.", ""] + [f"- {f}" for f in facts]
    code = ["", "## How to load", "", "```python", *load, "```", "", f"With gptkit: {gptkit_use}.", ""]
    return "\n".join(front + body + code)


def write_card(staging: Path, text: str) -> None:
    with replacing(staging / "README.md") as tmp:
        tmp.write_text(text, encoding="utf-8")


# --- export -----------------------------------------------------------------------------------
def load_source(source: Path, adapters: bool) -> tuple[GPT, checkpoint.Checkpoint | None, dict | None]:
    """The model to export (LoRA unmerged), its checkpoint (None for a peft folder) and LoRA settings."""
    peft = is_peft_dir(source)
    if peft and adapters:
        raise GptkitError(f"{source} is a peft adapter folder already: export it without --adapters to merge it")
    origin = sources.find(str(source), None) if peft else sources.find("resume", source)
    if adapters and not origin.lora:
        raise GptkitError(
            f"{source} is a full finetune, not a LoRA run: it has no adapters; export it without --adapters"
        )
    model, lora = origin.load()
    return model, origin.ckpt, lora


def export(source: str | os.PathLike, dest: str | os.PathLike, adapters: bool = False) -> Path:
    """Write SOURCE (a run's folder or a peft adapter folder) to DEST (new or empty): the model as a
    Hugging Face GPT-2 directory, or with `adapters` a LoRA run's adapters as a peft directory."""
    source, dest = Path(source), Path(dest)
    check_dest(dest)  # before loading anything: a multi-GB load should not end in this error
    model, ckpt, lora = load_source(source, adapters)
    model.eval()
    labels = ckpt.labels if ckpt is not None else None
    if labels is None and model.score is not None:  # a peft classifier's adapter: named as transformers names them
        labels = [f"LABEL_{i}" for i in range(model.config.n_labels)]
    facts = card_facts(ckpt, lora, model, source, adapters)
    card = model_card(facts, dest, run_base(ckpt, lora), adapters, model.config.block_size, labels)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        if adapters:
            to_peft_dir(lora_state_dict(model), lora, staging)
            write_hf_extras(staging, model.config.block_size, generation=False, pad=bool(labels))
        else:
            block_size = model.config.block_size
            # the model is not needed afterwards: convert it in place
            export_hf(merge_lora(model), staging, release=True, labels=labels)
            write_hf_extras(staging, block_size, generation=not labels, pad=bool(labels))
        write_card(staging, card)
        check_dest(dest)  # still empty? (another process may have written there meanwhile)
        if dest.is_dir():
            dest.rmdir()
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if set(argv) & {"-h", "--help"}:
        print(f"{USAGE.split('  (')[0]}\n\narguments:\n{help_table(HELP_ROWS)}")
        return
    adapters = "--adapters" in argv
    args = [a for a in argv if a != "--adapters"]
    unknown = [a for a in args if a.startswith("--")]
    if unknown:
        raise GptkitError(f"unknown option {unknown[0]}; {USAGE}")
    if len(args) != 2:
        raise GptkitError(f"expected 2 arguments, got {len(args)}; {USAGE}")
    written = export(*args, adapters=adapters)
    if (written / "config.json").is_file() and "GPT2ForSequenceClassification" in (written / "config.json").read_text():
        print(f'wrote {written}: use it with transformers.pipeline("text-classification", model={str(written)!r})')
    elif adapters:
        print(f"wrote {written}: load it with peft.PeftModel.from_pretrained(GPT2LMHeadModel, {str(written)!r})")
    else:
        print(f"wrote {written}: load it with transformers.GPT2LMHeadModel.from_pretrained({str(written)!r})")


if __name__ == "__main__":
    run_cli(main)
