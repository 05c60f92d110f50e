import pytest

from gptkit.errors import GptkitError
from gptkit.prompts import ALPACA, CHAT, FORMATS, PLAIN, Piece, detect_format, prompt_for, render, template


def test_plain_is_verbatim():
    assert render({"prompt": "Q: 2+2=", "completion": " 4"}) == [Piece("Q: 2+2=", " 4")]


def test_alpaca_with_and_without_input_is_stanford_alpacas_template():
    with_input = render({"instruction": "Add the numbers.", "input": "2 3", "output": "5"})
    assert with_input == [
        Piece(
            "Below is an instruction that describes a task, paired with an input that provides further context. "
            "Write a response that appropriately completes the request.\n\n"
            "### Instruction:\nAdd the numbers.\n\n### Input:\n2 3\n\n### Response:\n",
            "5",
        )
    ]
    no_input = (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nSay hi.\n\n### Response:\n"
    )
    for example in (
        {"instruction": "Say hi.", "output": "hi"},
        {"instruction": "Say hi.", "input": "", "output": "hi"},
    ):
        assert render(example) == [Piece(no_input, "hi")]
    assert prompt_for(ALPACA, "Say hi.") == no_input  # a user's text as the instruction, as in training


def test_chat_every_assistant_turn_is_a_response():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Bye!"},
    ]
    assert render({"messages": messages}) == [
        Piece("### System:\nBe brief.\n\n### User:\nHi\n\n### Assistant:\n", "Hello."),
        Piece("### User:\nBye\n\n### Assistant:\n", "Bye!"),  # follows the first response's <|endoftext|>
    ]
    assert prompt_for(CHAT, "Bye") == "### User:\nBye\n\n### Assistant:\n"
    assert prompt_for(PLAIN, "Q: 1+1=") == "Q: 1+1="


def test_templates_are_recorded_with_name_and_text():
    names = {fmt: template(fmt)["name"] for fmt in FORMATS}
    assert names == {PLAIN: "verbatim", ALPACA: "alpaca", CHAT: "gptkit-chat"}
    assert "### Response:\n{output}<|endoftext|>" in template(ALPACA)["text"]
    assert "### Assistant:\n{assistant}<|endoftext|>" in template(CHAT)["text"]


def test_format_detection_from_keys():
    assert detect_format({"prompt": "a", "completion": "b"}) == PLAIN
    assert detect_format({"instruction": "a", "output": "b", "id": 7}) == ALPACA  # other keys are ignored
    assert detect_format({"messages": []}) == CHAT


@pytest.mark.parametrize(
    "example, message",
    [
        ({"question": "a", "answer": "b"}, 'none of the formats: {"prompt", "completion"} (prompt/completion)'),
        ([1, 2], "expected a JSON object, got a list"),
        ({"prompt": "a", "output": "b"}, "mixes the keys of the prompt/completion and alpaca formats"),
        ({"prompt": "a"}, "'completion' is missing"),
        ({"instruction": "a", "output": None}, "'output' is missing"),
        ({"prompt": "", "completion": " b"}, "'prompt' is empty: fill it in"),
        ({"prompt": "a", "completion": ""}, "'completion' is empty: an empty response teaches nothing"),
        ({"prompt": "a", "completion": "  \n"}, "'completion' is only whitespace: an empty response"),
        ({"prompt": "a", "completion": 4}, "'completion' must be a string, not a number (4)"),
        ({"instruction": "a", "input": ["x"], "output": "b"}, "'input' must be a string, not a list"),
        ({"messages": "hi"}, "'messages' must be a non-empty list"),
        ({"messages": []}, "'messages' must be a non-empty list"),
        ({"messages": ["hi"]}, "messages[0] must be an object"),
        ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0] has role 'bot'; it must be one of"),
        ({"messages": [{"role": "user", "content": "x"}]}, "the last message must be the assistant's"),
        ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]}, "an empty response"),
        ({"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "y"}]}, "only the first"),
        ({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}]}, "must be a string"),
    ],
)
def test_bad_examples_are_one_clear_line(example, message):
    with pytest.raises(GptkitError) as e:
        render(example)
    assert message in str(e.value) and "\n" not in str(e.value)


# --- a prompt given in the dataset's own form -------------------------------------------------
FORM_EXAMPLES = {
    PLAIN: [{"prompt": "Q: what is 2+2?\nA:", "completion": " 4"}],
    ALPACA: [
        {"instruction": "Translate to French.", "input": "the red cat", "output": "le chat rouge"},
        {"instruction": "Say hi.", "output": "hi"},
    ],
    CHAT: [
        {
            "messages": [
                {"role": "system", "content": "Answer in one word."},
                {"role": "user", "content": "Colour of the sky?"},
                {"role": "assistant", "content": "Blue."},
            ]
        },
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Bye"},
                {"role": "assistant", "content": "Bye!"},
            ]
        },
    ],
}


def prepared_prompts(tmp_path, fmt: str) -> list[list[int]]:
    """What `gptkit.prepare` writes for each example of FORM_EXAMPLES[fmt], up to its last response."""
    import json

    import numpy as np

    from gptkit.data import open_examples
    from gptkit.prepare import prepare

    source = tmp_path / f"{fmt.replace('/', '-')}.jsonl"
    source.write_text("".join(json.dumps(e) + "\n" for e in FORM_EXAMPLES[fmt]))
    prepare(source, tmp_path / "data", val=source, progress=False)
    examples, out = open_examples(tmp_path / "data", "train"), []
    for start, end in zip(examples.offsets[:-1], examples.offsets[1:], strict=True):
        mask = np.asarray(examples.mask[start:end])
        last_response = int(np.flatnonzero(np.diff(np.concatenate([[0], mask])) == 1)[-1])
        out.append(examples.tokens[start : start + last_response].tolist())
    return out


def without_response(example: dict) -> dict:
    if "messages" in example:
        return {"messages": example["messages"][:-1]}
    return {k: v for k, v in example.items() if k not in ("completion", "output")}


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_prompt_in_the_datasets_form_gives_the_tokens_prepare_writes(tmp_path, fmt):
    import json

    from gptkit.tokenizer import EOT_TOKEN, get_encoding

    enc = get_encoding()
    prepared = prepared_prompts(tmp_path, fmt)
    assert len(prepared) == len(FORM_EXAMPLES[fmt])
    for example, tokens in zip(FORM_EXAMPLES[fmt], prepared, strict=True):
        text = prompt_for(fmt, json.dumps(without_response(example)))
        assert enc.encode(text, allowed_special={EOT_TOKEN}) == tokens, text  # as gptkit.sample encodes it
    # plain text is the template's main field, as a one-field example gives it
    first = FORM_EXAMPLES[fmt][-1 if fmt == ALPACA else 0]
    main = {PLAIN: "prompt", ALPACA: "instruction"}.get(fmt)
    plain = first[main] if main else first["messages"][1]["content"]
    one_field = {main: plain} if main else {"messages": [{"role": "user", "content": plain}]}
    assert prompt_for(fmt, plain) == prompt_for(fmt, json.dumps(one_field))


@pytest.mark.parametrize(
    "fmt,text,fragment",
    [
        (ALPACA, '{"instruction": "a", "output": "b"}', "the alpaca template has no field 'output' in a prompt: give"),
        (ALPACA, '{"question": "a"}', '{"instruction": ..., "input": ...} or plain text'),
        (ALPACA, '{"instruction": "a", "input": 3}', "'input' must be a string"),
        (ALPACA, '{"instruction": "a",', "starts with '{' but is not valid JSON"),
        (PLAIN, '{"prompt": "a", "completion": "b"}', "has no field 'completion'"),
        (CHAT, '{"messages": [{"role": "user", "content": "a"}], "system": "b"}', "has no field 'system'"),
        (CHAT, '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}', "last"),
        (CHAT, '{"messages": []}', "non-empty list"),
        (CHAT, '{"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]}', "system"),
    ],
)
def test_a_prompt_with_a_wrong_field_is_one_line(fmt, text, fragment):
    with pytest.raises(GptkitError, match=None) as e:
        prompt_for(fmt, text)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_a_plain_prompt_that_starts_with_a_brace_stays_verbatim():
    assert prompt_for(PLAIN, "{x: 1} means") == "{x: 1} means"
