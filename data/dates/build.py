"""Build the `dates` task: an ISO date written out in words ("Write 2013-11-30 in words:" -> " November 30, 2013").

    python data/dates/build.py      # writes train.jsonl, val.jsonl, test.jsonl next to this file

A task with one right answer, so exact match measures whether a finetune learned it, made by
a seeded generator (nothing to license): every date from 1970 to 2019 is a candidate (GPT-2
has one token for each of those years), and each split gets different dates, so val and test
ask for dates the model never saw. The examples are prompt/completion pairs, short (9 prompt
tokens, 4 response tokens and <|endoftext|>), so a small model learns the task on a laptop CPU
in minutes. The files are committed; this script rebuilds them byte for byte.
"""

import datetime
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 21
SIZES = {"train": 2000, "val": 200, "test": 200}
FIRST, LAST = datetime.date(1970, 1, 1), datetime.date(2019, 12, 31)


def example(day: datetime.date) -> dict:
    # The completion starts with a space, as GPT-2's tokens for words do.
    return {"prompt": f"Write {day.isoformat()} in words:", "completion": f" {day:%B} {day.day}, {day.year}"}


def build(out_dir: Path = HERE) -> dict[str, Path]:
    days = [FIRST + datetime.timedelta(n) for n in range((LAST - FIRST).days + 1)]
    picked = random.Random(SEED).sample(days, sum(SIZES.values()))  # distinct dates: no split sees another's
    paths, start = {}, 0
    for split, size in SIZES.items():
        lines = [json.dumps(example(day)) + "\n" for day in picked[start : start + size]]
        start += size
        paths[split] = out_dir / f"{split}.jsonl"
        paths[split].write_text("".join(lines), encoding="utf-8")
    return paths


if __name__ == "__main__":
    for split, path in build().items():
        print(f"wrote {path} ({SIZES[split]} examples)")
