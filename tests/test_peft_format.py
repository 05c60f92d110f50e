"""gptkit.peft_format: peft adapter directories read into gptkit (and written from it), checked against peft."""

import json
import math

import pytest
import torch

from conftest import assert_user_error, build_hf_gpt2, run_cli
from gptkit import checkpoint, peft_format
from gptkit.config import TrainConfig
from gptkit.data import Batches
from gptkit.errors import GptkitError
from gptkit.export import export
from gptkit.lora import apply_lora, lora_state_dict
from gptkit.metrics import read_metrics
from gptkit.model import GPT
from gptkit.peft_format import PEFT_TARGETS as MODULE_OF
from gptkit.peft_format import base_of, read_config, read_peft_dir, resolve_targets, to_peft_dir
from gptkit.tokenizer import get_encoding
from gptkit.train import train

PEFT_TARGETS = ["attn.c_attn", "mlp.c_fc", "mlp.c_proj"]  # peft's names: attention's c_proj is left out


def peft_model(base_dir, **lora):
    """A peft LoRA model on a Hugging Face GPT-2, its B matrices random (peft starts them at zero)."""
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2LMHeadModel

    config = LoraConfig(**({"r": 4, "lora_alpha": 8, "target_modules": PEFT_TARGETS, "lora_dropout": 0.1} | lora))
    model = get_peft_model(GPT2LMHeadModel.from_pretrained(base_dir), config)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def peft_dir(tmp_path_factory, tiny_hf_dir):
    out = tmp_path_factory.mktemp("peft") / "adapter"
    peft_model(tiny_hf_dir).save_pretrained(out)
    return out


def peft_logits(base_dir, adapter_dir, x):
    from peft import PeftModel
    from transformers import GPT2LMHeadModel

    with torch.no_grad():
        return PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(base_dir), adapter_dir).eval()(x).logits


def tokens(n=32, seed=0):
    return torch.randint(0, 50257, (2, n), generator=torch.Generator().manual_seed(seed))


def test_a_peft_adapter_loads_with_peft_s_logits(peft_dir, tiny_hf_dir):
    model, settings = read_peft_dir(peft_dir)
    assert {k: settings[k] for k in ("rank", "alpha", "dropout", "targets")} == {
        "rank": 4,
        "alpha": 8.0,
        "dropout": 0.1,
        "targets": "c_attn,c_fc,mlp.c_proj",
    }
    assert settings["base"] == str(tiny_hf_dir.resolve())
    assert settings["base_fingerprint"] == checkpoint.base_fingerprint(GPT.from_pretrained(tiny_hf_dir))
    x = tokens()
    with torch.no_grad():
        ours = model.eval()(x)[0]
    torch.testing.assert_close(ours, peft_logits(tiny_hf_dir, peft_dir, x), atol=1e-5, rtol=0)


def test_export_merges_a_peft_adapter_into_a_hugging_face_directory(peft_dir, tiny_hf_dir, tmp_path):
    from transformers import GPT2LMHeadModel

    dest = export(peft_dir, tmp_path / "merged")
    x = tokens(seed=5)
    with torch.no_grad():
        merged = GPT2LMHeadModel.from_pretrained(dest).eval()(x).logits
    torch.testing.assert_close(merged, peft_logits(tiny_hf_dir, peft_dir, x), atol=1e-5, rtol=0)
    assert "rank 4, alpha 8, dropout 0.1" in (dest / "README.md").read_text()


def test_bases_are_named_as_peft_and_the_hub_name_them(tiny_hf_dir, tmp_path):
    assert base_of({"base_model_name_or_path": "openai-community/gpt2-xl"}, tmp_path) == "gpt2-xl"
    assert base_of({"base_model_name_or_path": "gpt2-medium"}, tmp_path) == "gpt2-medium"
    assert base_of({"base_model_name_or_path": str(tiny_hf_dir)}, tmp_path) == str(tiny_hf_dir.resolve())
    with pytest.raises(GptkitError, match="adapts a LlamaForCausalLM, not GPT-2"):
        base_of({"base_model_name_or_path": "x/y", "auto_mapping": {"base_model_class": "LlamaForCausalLM"}}, tmp_path)
    with pytest.raises(GptkitError, match="names no base_model_name_or_path"):
        base_of({}, tmp_path)


def test_gptkit_adapters_written_for_peft_give_the_same_logits(tiny_hf_dir, tmp_path):
    model = apply_lora(GPT.from_pretrained(tiny_hf_dir), rank=3, alpha=6.0, dropout=0.05, targets="attn.c_proj,c_fc")
    torch.manual_seed(2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(0, 0.2)
    settings = checkpoint.lora_settings(3, 6.0, 0.05, "attn.c_proj,c_fc", str(tiny_hf_dir), model)
    to_peft_dir(lora_state_dict(model), settings, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["fan_in_fan_out"] is True and config["base_model_name_or_path"] == str(tiny_hf_dir.resolve())
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (3, 6.0, 0.05)
    x = tokens(seed=3)
    with torch.no_grad():
        ours = model.eval()(x)[0]
    torch.testing.assert_close(peft_logits(tiny_hf_dir, tmp_path, x), ours, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "target_modules",
    [["c_proj"], ".*\\.(c_attn|c_fc)", "all-linear", ["h.0.attn.c_attn", "h.1.attn.c_attn"], ["attn.c_proj"]],
)
def test_target_modules_resolve_to_the_layers_peft_adapts(target_modules, tiny_hf_dir):
    model = peft_model(tiny_hf_dir, target_modules=target_modules)
    adapted = {name for name, m in model.base_model.model.named_modules() if hasattr(m, "lora_A")}
    ours = resolve_targets({"target_modules": target_modules}, 2, tiny_hf_dir)
    assert adapted == {f"transformer.h.{i}.{MODULE_OF[t]}" for i in range(2) for t in ours}


def test_sample_continues_a_peft_adapter_as_peft_generates(peft_dir, tiny_hf_dir):
    from peft import PeftModel
    from transformers import GPT2LMHeadModel

    from gptkit.sample import SampleConfig, sample

    prompt = "ROMEO: what"
    model = PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(tiny_hf_dir), peft_dir).eval()
    ids = torch.tensor([get_encoding().encode(prompt)])
    with torch.no_grad():
        out = model.generate(input_ids=ids, max_new_tokens=8, do_sample=False, pad_token_id=50256)
    settings = dict(start=prompt, num_samples=1, max_new_tokens=8, temperature=0.0, device="cpu", dtype="float32")
    ours = sample(SampleConfig(init_from=str(peft_dir), **settings))
    assert ours == [get_encoding().decode(out[0].tolist())]


def test_train_continues_a_peft_adapter_and_resumes(peft_dir, tiny_hf_dir, shakespeare_bins, tmp_path):
    run = dict(block_size=32, batch_size=2, eval_iters=1, eval_interval=2, device="cpu", dtype="float32")
    run |= dict(learning_rate=1e-2, decay_lr=False, progress=False, out_dir=str(tmp_path / "run"))
    run |= dict(data_root=str(shakespeare_bins.parent))
    train(TrainConfig(init_from=str(peft_dir), max_iters=2, **run))
    ckpt = checkpoint.load(tmp_path / "run" / checkpoint.BEST)
    expected = read_peft_dir(peft_dir)[1]
    assert ckpt.lora == expected  # the run keeps its LoRA settings and base like any LoRA run
    # Its first evaluation is the peft model's own loss on the same fixed val batches.
    val = Batches(shakespeare_bins, "val", 2, 32, "cpu", TrainConfig().seed, 50257)
    x, y = next(iter(val.eval_batches(1)))
    from peft import PeftModel
    from transformers import GPT2LMHeadModel

    reference = PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(tiny_hf_dir), peft_dir).eval()
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(reference(x).logits.flatten(0, 1), y.flatten()).item()
    first = read_metrics(tmp_path / "run").evals[0]
    assert first["iter"] == 0 and math.isclose(first["val_loss"], loss, abs_tol=1e-5)
    summary = train(TrainConfig(init_from="resume", max_iters=4, **run))
    resumed = checkpoint.load(checkpoint.latest_in(tmp_path / "run"))
    assert summary["iter_num"] == resumed.iter_num == 4 and resumed.lora == expected


def write_adapter(tmp_path, base, config_edit=None, weights=None):
    """A copy of a peft adapter with its config edited (or replaced by raw text)."""
    out = tmp_path / "adapter"
    out.mkdir()
    config = json.loads((base / "adapter_config.json").read_text())
    if isinstance(config_edit, str):
        (out / "adapter_config.json").write_text(config_edit)
    elif config_edit is not False:
        (out / "adapter_config.json").write_text(json.dumps(config | (config_edit or {})))
    (out / "adapter_model.safetensors").write_bytes((weights or base / "adapter_model.safetensors").read_bytes())
    return out


def test_a_classifier_adapter_saved_by_peft_loads_with_peft_s_probabilities(tiny_hf_dir, tmp_path):
    """task_type SEQ_CLS, the head in modules_to_save (as peft saves it): gptkit's model from the
    folder, and the GPT2ForSequenceClassification gptkit.export merges it into, give peft's
    probabilities on a right-padded batch."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import GPT2ForSequenceClassification

    from gptkit.sources import find, load_model

    def hf_base():
        return GPT2ForSequenceClassification.from_pretrained(tiny_hf_dir, num_labels=3, pad_token_id=50256)

    torch.manual_seed(2)
    model = get_peft_model(hf_base(), LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=PEFT_TARGETS))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "score" in name:
                p.normal_(0, 0.2)
    adapter = tmp_path / "cls-adapter"
    model.save_pretrained(adapter)
    saved = json.loads((adapter / "adapter_config.json").read_text())["modules_to_save"]
    assert "score" in saved and set(saved) <= set(peft_format.SEQ_CLS_SAVED), saved  # peft's names, in any version
    x = tokens(12)
    lengths = torch.tensor([12, 5])
    x[1, 5:] = 50256  # right padding
    with torch.no_grad():
        peft = PeftModel.from_pretrained(hf_base(), adapter).eval()
        theirs = peft(x, attention_mask=(torch.arange(12) < lengths[:, None]).long()).logits.softmax(-1)
        assert find(str(adapter)).config.n_labels == 3
        ours = load_model(str(adapter)).eval()(x, last=lengths - 1)[0].softmax(-1)
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
        export(adapter, tmp_path / "merged")
        merged = GPT2ForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
        assert merged.config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
        torch.testing.assert_close(merged(x).logits.softmax(-1), theirs, atol=1e-5, rtol=0)
    # a SEQ_CLS adapter without its head, on a base that has none: refused, not a language model's logits
    from safetensors.torch import load_file, save_file

    headless = {k: v for k, v in load_file(adapter / "adapter_model.safetensors").items() if "score" not in k}
    save_file(headless, tmp_path / "headless.safetensors")
    bare = write_adapter(tmp_path, adapter, {"modules_to_save": None}, weights=tmp_path / "headless.safetensors")
    with pytest.raises(GptkitError, match="neither it nor its base holds the head"):
        read_peft_dir(bare)


@pytest.mark.parametrize(
    "edit, fragment",
    [
        ({"use_dora": True}, "use_dora"),
        ({"use_rslora": True}, "use_rslora"),
        ({"bias": "lora_only"}, "bias='lora_only'"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"task_type": "SEQ_CLS", "modules_to_save": ["score", "lm_head"]}, "modules_to_save"),
        ({"layers_to_transform": [0]}, "layers_to_transform"),
        ({"rank_pattern": {"c_fc": 8}}, "rank_pattern"),
        ({"alpha_pattern": {"c_fc": 8}}, "alpha_pattern"),
        ({"peft_type": "LOHA"}, "LOHA"),
        ({"target_modules": ["c_attn", "wte"]}, "transformer.wte"),
        ({"target_modules": ["lm_head"]}, "lm_head"),
        ({"target_modules": "transformer\\.h\\.0\\.attn\\.c_attn"}, "some blocks only"),
        ({"r": 0}, "r=0"),
    ],
)
def test_options_gptkit_does_not_implement_are_refused_by_name(edit, fragment, peft_dir, tmp_path):
    adapter = write_adapter(tmp_path, peft_dir, edit)
    with pytest.raises(GptkitError, match=fragment.replace("[", "\\[")):
        read_peft_dir(adapter)


def test_bad_adapter_directories_are_one_line_errors_that_write_nothing(peft_dir, tmp_path):
    other = build_hf_gpt2(tmp_path / "wider", n_embd=128)
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama"}))
    cases = [
        ("missing", False, "has no adapter_config.json"),
        ("broken", "{not json", "is not valid JSON"),
        ("other-base", {"base_model_name_or_path": str(other)}, "does not fit base"),
        ("llama-dir", {"base_model_name_or_path": str(llama)}, "'llama' model; gptkit loads GPT-2 models only"),
        ("llama-hub", {"base_model_name_or_path": "meta-llama/Llama-2-7b-hf"}, "not GPT-2"),
        ("gone", {"base_model_name_or_path": str(tmp_path / "nowhere")}, "which is missing"),
    ]
    adapters = {}
    for name, edit, _ in cases:
        (tmp_path / name).mkdir()
        adapters[name] = write_adapter(tmp_path / name, peft_dir, edit)
    before = sorted(tmp_path.rglob("*"))
    for name, _, fragment in cases:  # in-process: one process start per case would take a minute
        with pytest.raises(GptkitError, match=fragment):
            export(adapters[name], tmp_path / name / "dest")
    # and as a user sees it, from the CLIs: one line, exit 1
    assert_user_error(run_cli("-m", "gptkit.export", str(adapters["missing"]), str(tmp_path / "dest")), cases[0][2])
    from gptkit.sample import SampleConfig, sample

    with pytest.raises(GptkitError, match="is not valid JSON"):
        sample(SampleConfig(init_from=str(adapters["broken"]), device="cpu"))
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, no staging folder left


def test_read_config_accepts_what_peft_writes_by_default(peft_dir):
    config = read_config(peft_dir)  # peft's own defaults (qalora_group_size=16, megatron_core, ...) are fine
    assert config["r"] == 4 and config["target_modules"]
