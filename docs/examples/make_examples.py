"""Write the small example files of docs/tasks.md (run from this directory; deterministic)."""

import csv
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
rng = np.random.default_rng(0)

# classify: short reviews, three classes, commas and quotes included (csv quotes them)
WORDS = {"positive": ["great", "lovely", "a joy", "moving", "sharp", "funny"],
         "negative": ["dull", "awful", "a mess", "slow", "flat", "tired"],
         "mixed": ["uneven", "fine, but long", "good cast, weak plot", "some \"moments\""]}
with open(HERE / "reviews.csv", "w", newline="", encoding="utf-8") as f:
    out = csv.writer(f)
    out.writerow(["text", "label"])
    for i in range(150):
        label = list(WORDS)[i % 3]
        words = rng.choice(WORDS[label] + ["the film", "acting", "story", "and"], rng.integers(2, 7))
        out.writerow([" ".join(words), label])

# translate: numbers written in digits -> in English words, one pair per line
ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen " \
       "fifteen sixteen seventeen eighteen nineteen".split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def words(n: int) -> str:
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else "-" + ONES[n % 10])
    rest = "" if n % 100 == 0 else " " + words(n % 100)
    return ONES[n // 100] + " hundred" + rest


(HERE / "numbers.tsv").write_text("".join(f"{n}\t{words(n)}\n" for n in range(1000)),
                                  encoding="utf-8")

# series-classify: sine, square and sawtooth waves of 40-64 values, NaN-padded to 64
folder = HERE / "Waves"
folder.mkdir(exist_ok=True)
for part, n in (("TRAIN", 60), ("TEST", 60)):
    lines = []
    for i in range(n):
        label, length = i % 3 + 1, int(rng.integers(40, 65))
        t = np.arange(length) * rng.uniform(0.2, 0.4) + rng.uniform(0, 6)
        wave = [np.sin(t), np.sign(np.sin(t)), (t / np.pi) % 2 - 1][label - 1]
        x = 3 * wave + 10 + rng.normal(0, 0.3, length)
        values = [f"{v:.4f}" for v in x] + ["NaN"] * (64 - length)
        lines.append("\t".join([str(label)] + values))
    (folder / f"Waves_{part}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
