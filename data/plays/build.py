"""Build `speeches.jsonl` (the `plays` classification task) from tiny Shakespeare, which ships in data/shakespeare.

    python data/plays/build.py

Each example is one speech, its text without the speaker's name, labelled with the play it comes
from: five plays, told apart by speakers who appear in one of them only (a name shared by two
plays, such as Juliet, who is also in Measure for Measure, or a generic one, such as Clown or
Servant, is left out). The result is deterministic: the same input gives the same bytes.
Shakespeare's text is in the public domain.
"""

import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "shakespeare" / "input.txt"

SPEAKERS = {
    "Coriolanus": (
        "MENENIUS",
        "CORIOLANUS",
        "SICINIUS",
        "BRUTUS",
        "COMINIUS",
        "VOLUMNIA",
        "AUFIDIUS",
        "MARCIUS",
        "VIRGILIA",
    ),
    "Romeo and Juliet": (
        "ROMEO",
        "Nurse",
        "BENVOLIO",
        "MERCUTIO",
        "FRIAR LAURENCE",
        "CAPULET",
        "LADY CAPULET",
        "PARIS",
    ),
    "The Winter's Tale": ("LEONTES", "CAMILLO", "AUTOLYCUS", "PAULINA", "POLIXENES", "FLORIZEL", "HERMIONE", "PERDITA"),
    "Measure for Measure": (
        "DUKE VINCENTIO",
        "ISABELLA",
        "LUCIO",
        "ANGELO",
        "ESCALUS",
        "Provost",
        "POMPEY",
        "CLAUDIO",
        "ELBOW",
        "MARIANA",
    ),
    "The Taming of the Shrew": (
        "PETRUCHIO",
        "TRANIO",
        "KATHARINA",
        "BAPTISTA",
        "HORTENSIO",
        "GRUMIO",
        "LUCENTIO",
        "GREMIO",
        "BIONDELLO",
        "BIANCA",
    ),
}
PLAY_OF = {name: play for play, names in SPEAKERS.items() for name in names}


def speeches(text: str) -> list[dict]:
    """{"text": the speech, "label": its play} for every speech of a speaker of one play, in file order."""
    rows = []
    for block in text.split("\n\n"):
        lines = block.strip("\n").split("\n")
        if len(lines) < 2 or not re.fullmatch(r"[A-Z][A-Za-z' ]*:", lines[0]):
            continue
        play = PLAY_OF.get(lines[0][:-1])
        if play is not None:
            rows.append({"text": "\n".join(lines[1:]), "label": play})
    return rows


def build(out_dir: Path = HERE) -> Path:
    """Write out_dir/speeches.jsonl; returns its path."""
    rows = speeches(SOURCE.read_text(encoding="utf-8"))
    path = Path(out_dir) / "speeches.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def main() -> None:
    path = build()
    print(f"wrote {len(path.read_text(encoding='utf-8').splitlines()):,} speeches to {path}")


if __name__ == "__main__":
    main()
