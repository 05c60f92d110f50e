"""Build the `dates_preference` task from the shipped `dates` task: preference pairs whose preference is checkable.

    python data/dates_preference/build.py   # writes train.jsonl, val.jsonl, test.jsonl next to this file

For every example of data/dates (same prompts, same splits), `chosen` is the right answer in the
asked format (" November 30, 2013") and `rejected` a plausible wrong one, drawn by a seeded
generator from four kinds of mistake a half-trained model makes: a neighbouring month, a
neighbouring day, a neighbouring year, or the ISO date echoed back instead of written in words.
The files are committed; this script rebuilds them byte for byte.
"""

import datetime
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATES = HERE.parent / "dates"
SEED = 29
SPLITS = ("train", "val", "test")


def words(day: datetime.date) -> str:
    return f" {day:%B} {day.day}, {day.year}"


def wrong_answer(day: datetime.date, rng: random.Random) -> str:
    """A plausible wrong answer to 'Write DAY in words:' (never the right one)."""
    kind = rng.choice(("month", "day", "year", "iso"))
    if kind == "iso":
        return f" {day.isoformat()}"
    shift = rng.choice((-2, -1, 1, 2))
    if kind == "month":
        month = (day.month - 1 + shift) % 12 + 1
        return f" {datetime.date(2000, month, 1):%B} {day.day}, {day.year}"
    if kind == "day":
        other = 1 + (day.day - 1 + shift) % 28  # a day every month has
        return f" {day:%B} {other}, {day.year}"
    return f" {day:%B} {day.day}, {day.year + shift}"


def pair(example: dict, rng: random.Random) -> dict:
    iso = example["prompt"].split()[1]
    day = datetime.date.fromisoformat(iso)
    assert example["completion"] == words(day), example
    return {"prompt": example["prompt"], "chosen": example["completion"], "rejected": wrong_answer(day, rng)}


def build(out_dir: Path = HERE) -> dict[str, Path]:
    rng, paths = random.Random(SEED), {}
    for split in SPLITS:
        lines = (DATES / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        pairs = [pair(json.loads(line), rng) for line in lines if line.strip()]
        paths[split] = out_dir / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    return paths


if __name__ == "__main__":
    for path in build().values():
        print(f"wrote {path}")
