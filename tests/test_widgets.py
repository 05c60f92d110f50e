"""gptkit.widgets: the panels' callback paths run headless, and train_live returns train's summary."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure
from test_classification import colours  # noqa: F401  (the labelled dataset fixture)
from test_classify import classifier, texts_of  # noqa: F401  (a trained tiny classifier)

from conftest import run_cli_in_process
from gptkit import checkpoint
from gptkit.config import TrainConfig
from gptkit.diagnostics import read_metrics
from gptkit.sample import SampleConfig, sample
from gptkit.tokenizer import get_encoding
from gptkit.train import train
from gptkit.widgets import ClassifierPanel, FinetunePanel, SamplePanel, short_finetune, train_live


@pytest.fixture
def base(shakespeare_bins, tmp_path) -> TrainConfig:
    return TrainConfig(
        out_dir=str(tmp_path / "runs"),
        dataset="shakespeare",
        data_root=str(Path(shakespeare_bins).parent),
        init_from="scratch",
        n_layer=1,
        n_head=2,
        n_embd=32,
        block_size=16,
        batch_size=2,
        max_iters=2,
        eval_interval=1,
        eval_iters=1,
        learning_rate=1e-3,
        progress=False,
        device="cpu",
    )


def test_short_finetune_runs_in_its_own_folder_with_the_given_settings(base):
    run = short_finetune(base, 3e-4, 0.1)
    assert run.out_dir == Path(base.out_dir) / "lr3.0e-04-dropout0.1"
    assert run.config["learning_rate"] == 3e-4 and run.config["dropout"] == 0.1
    assert run.iters.tolist() == [0, 1, 2]
    again = short_finetune(base, 3e-4, 0.1)  # the same settings again replace that run
    assert again.out_dir == run.out_dir and again.iters.tolist() == [0, 1, 2]


def test_panel_click_runs_a_finetune_with_the_slider_values(base):
    panel = FinetunePanel(base)
    assert panel.lr.value == pytest.approx(base.learning_rate) and panel.dropout.value == base.dropout
    panel.lr.value = 1e-2
    panel.dropout.value = 0.25
    panel.button.click()
    assert len(panel.runs) == 1, panel.status.value
    run = panel.runs[0]
    assert run.config["learning_rate"] == pytest.approx(1e-2) and run.config["dropout"] == 0.25
    assert "done: 1 run" in panel.status.value and not panel.button.disabled
    assert panel.output.outputs and "image/png" in panel.output.outputs[0]["data"]
    panel.run()  # the same settings again: replaced, not added
    assert len(panel.runs) == 1


def test_panel_reports_a_failed_run(base):
    panel = FinetunePanel(base)
    panel.base = replace(base, dataset="no-such-dataset")
    with pytest.raises(Exception, match="not found"):
        panel.run()
    assert panel.status.value.startswith("failed:") and not panel.button.disabled


def test_train_live_draws_and_returns_trains_summary(base, tmp_path):
    cfg = replace(base, out_dir=str(tmp_path / "live"), max_iters=3)
    shown = []
    summary = train_live(cfg, every=0.01, show=shown.append)
    assert summary["iter_num"] == 3
    assert shown and all(isinstance(f, Figure) for f in shown)
    # The last figure drawn shows the finished run: its val curve ends at the last evaluation.
    val_lines = [line for line in shown[-1].axes[0].get_lines() if line.get_label().endswith(" val")]
    assert val_lines[0].get_xdata().tolist() == read_metrics(cfg.out_dir).iters.tolist() == [0, 1, 2, 3]


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_failed_live_redraw_does_not_stop_the_run_or_later_redraws(base, tmp_path):
    """The watcher thread may read while the run writes; one failed redraw must not end the live plot."""
    cfg = replace(base, out_dir=str(tmp_path / "flaky"), max_iters=6)
    calls = []

    def show(fig):
        calls.append(fig)
        if len(calls) == 1:
            raise ValueError("a torn read")

    summary = train_live(cfg, every=0.01, show=show)
    assert summary["iter_num"] == 6
    assert len(calls) >= 2  # drawing went on after the failure (at least the final draw)


def test_sample_panel_generates_what_gptkit_sample_does_with_the_widgets_values(base, tmp_path):
    """Set the widgets as a learner would, click: the text is gptkit.sample's for those settings and seed."""
    out_dir = tmp_path / "finished"
    train(replace(base, out_dir=str(out_dir), max_iters=4))
    panel = SamplePanel(out_dir, seed=7)
    panel.prompt.value = "KING HENRY:"
    panel.temperature.value = 1.2
    panel.max_tokens.value = 9
    panel.button.click()
    expected = sample(SampleConfig(out_dir=str(out_dir), start="KING HENRY:", num_samples=1, max_new_tokens=9,
                                   temperature=1.2, seed=7))[0]  # fmt: skip
    assert panel.text == expected and expected.startswith("KING HENRY:")
    assert len(get_encoding().encode(expected)) <= len(get_encoding().encode("KING HENRY:")) + 9
    assert panel.output.outputs[0]["text"] == expected + "\n"
    assert "done: seed 7" in panel.status.value and not panel.button.disabled
    panel.temperature.value = 0.0  # greedy: another setting, another text, the CLI's again
    assert [panel.generate()] == sample(panel.config()) != [expected]


def test_sample_panel_reports_a_missing_run(tmp_path):
    panel = SamplePanel(tmp_path / "no-run")
    with pytest.raises(Exception, match="not a folder"):
        panel.generate()  # what a click calls (ipywidgets logs a click's exception instead of raising it)
    assert panel.status.value.startswith("failed:") and not panel.button.disabled


def test_classifier_panel_gives_gptkit_classifys_label_and_every_probability(classifier, colours):  # noqa: F811
    text = texts_of(colours, 3)[2]
    panel = ClassifierPanel(classifier)
    panel.text.value = text
    panel.button.click()
    cli = run_cli_in_process("-m", "gptkit.classify", str(classifier), text)
    label, p = cli.stdout.strip().split("\t")
    assert list(panel.probabilities)[0] == label and panel.probabilities[label] == pytest.approx(float(p), abs=1e-4)
    # every label's probability, against the checkpoint's model read at the text's last token
    ckpt = checkpoint.load(classifier / checkpoint.BEST)
    model = checkpoint.model_from_checkpoint(ckpt).eval()
    ids = torch.tensor([get_encoding().encode_ordinary(text)])
    with torch.no_grad():
        alone = model(ids, last=torch.tensor([ids.size(1) - 1]))[0].softmax(-1)[0].tolist()
    assert panel.probabilities == pytest.approx(dict(zip(ckpt.labels, alone, strict=True)), abs=1e-6)
    assert panel.output.outputs[0]["text"].startswith(label) and panel.status.value.startswith(label)
    assert not panel.button.disabled


def test_classifier_panel_reports_an_empty_text_and_a_language_model(classifier, shakespeare_bins, base):  # noqa: F811
    panel = ClassifierPanel(classifier, text="")
    with pytest.raises(Exception, match="empty"):
        panel.classify()  # what a click calls
    assert panel.status.value.startswith("failed:") and not panel.button.disabled
    train(base)
    with pytest.raises(Exception, match="not a classifier"):
        ClassifierPanel(base.out_dir, text="ROMEO:").classify()
