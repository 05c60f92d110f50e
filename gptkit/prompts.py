"""Prompt templates for example data: one example in, its (prompt, response) pieces out.

Three formats, recognised from an example's keys:

- `prompt/completion`: `{"prompt": ..., "completion": ...}`, used verbatim: the completion
  usually starts with a space, as GPT-2 puts the space in front of a word.
- `alpaca`: `{"instruction": ..., "input": ..., "output": ...}`, Stanford Alpaca's template
  (`input` may be missing or empty: then the template without the input section).
- `chat`: `{"messages": [{"role": "system" | "user" | "assistant", "content": ...}, ...]}`.
  GPT-2 has no chat template, so gptkit uses a plain-text one in Alpaca's style: every
  message is a `### System:` / `### User:` / `### Assistant:` heading line followed by its text,
  messages separated by a blank line. Every assistant turn is a response.

`render(example)` returns a list of `Piece(prompt, response)`: one for the first two formats,
one per assistant turn for chat. `gptkit.prepare` tokenizes each prompt and each response on
its own (so the boundary between them is exact) and puts `<|endoftext|>` after each response:
the model learns where an answer ends. A user's mistake raises a GptkitError whose message
`gptkit.prepare` prefixes with the file and line.

`prompt_for(fmt, text)` is the prompt of a new example, for generating its response: plain
text fills the template's main field; a JSON object with the template's `PROMPT_FIELDS` (an
example without its response) fills them all, as `render` would.
"""

import json
from typing import NamedTuple

from gptkit.errors import GptkitError

PLAIN, ALPACA, CHAT = "prompt/completion", "alpaca", "chat"
FORMATS = (PLAIN, ALPACA, CHAT)
KEYS = {PLAIN: ("prompt", "completion"), ALPACA: ("instruction", "input", "output"), CHAT: ("messages",)}
# What a new example gives to be answered: its keys less the response
PROMPT_FIELDS = {PLAIN: ("prompt",), ALPACA: ("instruction", "input"), CHAT: ("messages",)}

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)
ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
CHAT_MESSAGE = "### {role}:\n{content}\n\n"  # an assistant's content is the response; <|endoftext|> ends it

# What meta.json and the checkpoint record as the template: a name and its text, {field}s to fill.
TEMPLATES = {
    PLAIN: "{prompt}{completion}<|endoftext|>",
    ALPACA: (
        ALPACA_WITH_INPUT + "{output}<|endoftext|>\n(without an input:)\n" + ALPACA_NO_INPUT + "{output}<|endoftext|>"
    ),
    CHAT: (
        "### System:\n{system}\n\n### User:\n{user}\n\n### Assistant:\n{assistant}<|endoftext|>"
        "### User:\n{user}\n\n### Assistant:\n{assistant}<|endoftext|>..."
        "\n(the system message is optional; every assistant turn is a response)"
    ),
}
TEMPLATE_NAMES = {PLAIN: "verbatim", ALPACA: "alpaca", CHAT: "gptkit-chat"}


class Piece(NamedTuple):
    prompt: str  # context the model reads: never a target under mask_prompt
    response: str  # what the model learns to write, followed by <|endoftext|>


def template(fmt: str) -> dict:
    """The template of a format as recorded in meta.json: {"name": ..., "text": ...}."""
    return {"name": TEMPLATE_NAMES[fmt], "text": TEMPLATES[fmt]}


def detect_format(example: object) -> str:
    """Which of FORMATS this example is, from its keys; a GptkitError when it is none or several."""
    if not isinstance(example, dict):
        raise GptkitError(f"expected a JSON object, got {_type(example)}: {_formats_hint()}")
    matches = [fmt for fmt, keys in KEYS.items() if any(k in example for k in keys)]
    if not matches:
        keys = ", ".join(map(repr, example)) or "none"
        raise GptkitError(f"the object (keys: {keys}) is none of the formats: {_formats_hint()}")
    if len(matches) > 1:
        raise GptkitError(f"the object mixes the keys of the {' and '.join(matches)} formats: use one format's keys")
    return matches[0]


def render(example: dict, fmt: str | None = None) -> list[Piece]:
    """The (prompt, response) pieces of one example; `fmt` is detected when not given."""
    fmt = fmt or detect_format(example)
    if fmt == PLAIN:
        return [Piece(_text(example, "prompt"), _text(example, "completion", response=True))]
    if fmt == ALPACA:
        return [_alpaca(example)]
    if fmt == CHAT:
        return _chat(example)
    raise ValueError(f"unknown format {fmt!r}")


def prompt_for(fmt: str, text: str) -> str:
    """The prompt of a new example, whose response the model is to write.

    `text` is plain text (the instruction for alpaca, the user's turn for chat, verbatim for
    prompt/completion) or a JSON object of the format's PROMPT_FIELDS, as in the dataset
    (`{"instruction": ..., "input": ...}`, `{"messages": [system, user, ...]}`).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    example = _json_object(text, fmt)
    if example is None:
        example = {PROMPT_FIELDS[fmt][0]: [{"role": "user", "content": text}] if fmt == CHAT else text}
    wrong = [k for k in example if k not in PROMPT_FIELDS[fmt]]
    if wrong:
        raise GptkitError(
            f"the {fmt} template has no field {_short(wrong[0])} in a prompt: give {_fields(fmt)} "
            f"(the response, {KEYS[fmt][-1]!r}, is what the model writes)"
        )
    if fmt == PLAIN:
        return _text(example, "prompt")
    if fmt == ALPACA:
        return _alpaca_prompt(example)
    return _chat_prompt(example)


def _json_object(text: str, fmt: str) -> dict | None:
    """`text` as a JSON object, or None when it is plain text."""
    if not text.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        if fmt == PLAIN:
            return None  # a verbatim prompt may well start with a brace
        raise GptkitError(f"the prompt starts with '{{' but is not valid JSON ({e}): give {_fields(fmt)}") from None
    return value if isinstance(value, dict) else None


def _fields(fmt: str) -> str:
    if fmt == CHAT:
        return '{"messages": [{"role": "system", "content": ...}, {"role": "user", "content": ...}]} or plain text'
    return "{" + ", ".join(f'"{k}": ...' for k in PROMPT_FIELDS[fmt]) + "} or plain text"


def _alpaca(example: dict) -> Piece:
    return Piece(_alpaca_prompt(example), _text(example, "output", response=True))


def _alpaca_prompt(example: dict) -> str:
    instruction = _text(example, "instruction")
    extra = example.get("input")
    if extra is None or extra == "":
        return ALPACA_NO_INPUT.format(instruction=instruction)
    if not isinstance(extra, str):
        raise GptkitError(f"'input' must be a string, not {_type(extra)}")
    return ALPACA_WITH_INPUT.format(instruction=instruction, input=extra)


def _chat_prompt(example: dict) -> str:
    """The conversation so far, laid out as `_chat` lays out a dataset's, up to the assistant's heading."""
    messages = example.get("messages")
    if not isinstance(messages, list) or not messages:
        raise GptkitError(f"'messages' must be a non-empty list of {{role, content}} objects, not {_short(messages)}")
    if isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
        raise GptkitError("the last message is the assistant's: end with the user's turn the model is to answer")
    *answered, last = _chat({"messages": [*messages, {"role": "assistant", "content": "(to write)"}]})
    return "".join(p.prompt + p.response + "<|endoftext|>" for p in answered) + last.prompt


def _chat(example: dict) -> list[Piece]:
    messages = example["messages"]
    if not isinstance(messages, list) or not messages:
        raise GptkitError(f"'messages' must be a non-empty list of {{role, content}} objects, not {_short(messages)}")
    pieces, context = [], ""
    for i, message in enumerate(messages):
        role, content = _message(message, i)
        if role == "assistant":
            pieces.append(Piece(context + "### Assistant:\n", content))
            context = ""  # the next prompt follows this response's <|endoftext|>
        else:
            context += CHAT_MESSAGE.format(role=ROLES[role], content=content)
    if context:
        raise GptkitError("the last message must be the assistant's: a prompt with no response teaches nothing")
    return pieces


def _message(message: object, i: int) -> tuple[str, str]:
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        raise GptkitError(f"{where} must be an object with 'role' and 'content', not {_type(message)}")
    role = message.get("role")
    if role not in ROLES:
        raise GptkitError(f"{where} has role {_short(role)}; it must be one of {', '.join(map(repr, ROLES))}")
    if role == "system" and i != 0:
        raise GptkitError(f"{where} is a system message: only the first message may be one")
    return role, _text(message, "content", where=where, response=role == "assistant")


def _text(obj: dict, key: str, where: str = "", response: bool = False) -> str:
    """obj[key] as a non-empty string, or a GptkitError naming what is wrong."""
    name = f"{where}.{key}" if where else repr(key)
    if key not in obj or obj[key] is None:
        raise GptkitError(f"{name} is missing")
    value = obj[key]
    if not isinstance(value, str):
        raise GptkitError(f"{name} must be a string, not {_type(value)}")
    if not value.strip():
        empty = "empty" if not value else "only whitespace"
        if response:
            raise GptkitError(f"{name} is {empty}: an empty response teaches nothing; give every example one")
        raise GptkitError(f"{name} is {empty}: fill it in or drop the example")
    return value


def _formats_hint() -> str:
    return (
        '{"prompt", "completion"} (prompt/completion), {"instruction", "input", "output"} (alpaca) '
        'or {"messages": [{"role", "content"}, ...]} (chat)'
    )


def _type(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), f"a number ({value})" if isinstance(value, int | float) else type(value).__name__
    )


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
