"""A RULER-style long-context suite (Hsieh et al. 2024), generated offline from any haystack text.

Tasks, as RULER defines them (scored by the fraction of expected strings found in the greedy reply):

- ``niah_single``: one "special magic number" for a key, hidden in the haystack; asked for it.
- ``niah_multikey``: the same with three distractor keys and numbers around it.
- ``niah_multivalue``: four numbers for one key; all four asked for.
- ``niah_multiquery``: four keys with a number each; all four asked for.
- ``variable_tracking``: a chain ``VAR A = 12345``, ``VAR B = VAR A``, ... spread through the haystack;
  every variable holding the value asked for.
- ``common_words``: a numbered list of words where ten occur many times and the rest a few; the ten
  most common asked for.
- ``frequent_words``: coded words with Zipf-like frequencies instead of a haystack; the three most
  frequent asked for.

Prompts are built in tokens, so a task at length L has about L tokens whatever the tokenizer; the same
seed gives the same prompts for every scorer and policy.
"""

from __future__ import annotations

import random
import string
from collections import Counter
from dataclasses import dataclass
from typing import Any

TASKS = ("niah_single", "niah_multikey", "niah_multivalue", "niah_multiquery", "variable_tracking",
         "common_words", "frequent_words")
WORDS = ("apple river stone cloud forest candle mirror garden silver thunder meadow lantern harbor violet "
         "pepper marble feather canyon velvet ember willow copper orchard falcon glacier saddle quartz tulip "
         "anchor biscuit compass dagger emerald fiddle goblet hammock igloo jigsaw kettle locket mitten nectar "
         "oyster parrot quiver ribbon sparrow teapot umbrella vessel walnut yonder zephyr").split()


@dataclass(frozen=True)
class Sample:
    """One prompt and the strings a correct reply contains."""

    task: str
    prompt: str
    answers: tuple[str, ...]


def score(reply: str, answers: tuple[str, ...]) -> float:
    """RULER's string-match-all: the fraction of expected strings that appear in the reply."""
    reply = reply.lower()
    return sum(a.lower() in reply for a in answers) / len(answers)


def make_sample(task: str, tokenizer: Any, length: int, haystack: list[int], rng: random.Random) -> Sample:
    """A ``task`` prompt of about ``length`` tokens (``haystack``: filler token ids, tokenized once by the caller
    without special tokens, for the tasks that have a haystack)."""
    if task not in TASKS:
        raise ValueError(f"unknown RULER task {task!r}; tasks: {', '.join(TASKS)}")
    if task.startswith("niah") or task == "variable_tracking":
        needles, question, answers = _needles(task, rng)
        return Sample(task, _plant(tokenizer, length, haystack, needles, question, rng), answers)
    return _words(task, tokenizer, length, rng)


def _key(rng: random.Random) -> str:
    return "-".join(rng.sample(WORDS, 2))


def _number(rng: random.Random) -> str:
    return str(rng.randint(1_000_000, 9_999_999))


def _needles(task: str, rng: random.Random) -> tuple[list[str], str, tuple[str, ...]]:
    fact = "One of the special magic numbers for {} is: {}."
    if task in ("niah_single", "niah_multikey"):
        keys = [_key(rng) for _ in range(1 if task == "niah_single" else 4)]
        values = [_number(rng) for _ in keys]
        target = rng.randrange(len(keys))
        return ([fact.format(k, v) for k, v in zip(keys, values)],
                f"What is the special magic number for {keys[target]} mentioned in the text? The special magic "
                f"number for {keys[target]} is:", (values[target],))
    if task == "niah_multivalue":
        key, values = _key(rng), [_number(rng) for _ in range(4)]
        return ([fact.format(key, v) for v in values],
                f"What are all the special magic numbers for {key} mentioned in the text? The special magic numbers "
                f"for {key} are:", tuple(values))
    if task == "niah_multiquery":
        keys = [_key(rng) for _ in range(4)]
        values = [_number(rng) for _ in keys]
        return ([fact.format(k, v) for k, v in zip(keys, values)],
                f"What are the special magic numbers for {', '.join(keys)} mentioned in the text? The special magic "
                "numbers are:", tuple(values))
    names = ["".join(rng.choices(string.ascii_uppercase, k=5)) for _ in range(5)]
    value = str(rng.randint(10000, 99999))
    chain = [f"VAR {names[0]} = {value}."] + [f"VAR {b} = VAR {a}." for a, b in zip(names, names[1:])]
    return (chain, f"Find all variables that are assigned the value {value} in the text above. Answer: the "
                   "variables are:", tuple(names))


def _plant(tokenizer: Any, length: int, hay: list[int], needles: list[str], question: str,
           rng: random.Random) -> str:
    """Haystack tokens up to ``length`` with the needles at random depths, in order, then the question."""
    fixed = _count(tokenizer, " ".join(needles) + "\n" + question) + 16
    if not hay:
        raise ValueError("the haystack text is empty")
    hay = (hay * (length // len(hay) + 1))[: max(0, length - fixed)]
    cuts = sorted(rng.randrange(len(hay) + 1) for _ in needles)
    parts, start = [], 0
    for cut, needle in zip(cuts, needles):
        parts += [tokenizer.decode(hay[start:cut]), needle]
        start = cut
    parts.append(tokenizer.decode(hay[start:]))
    return " ".join(parts) + "\n" + question


def _words(task: str, tokenizer: Any, length: int, rng: random.Random) -> Sample:
    """Word lists sized by tokens: common words (ten repeated words among rarer ones) or coded frequent words."""
    if task == "common_words":
        common = rng.sample(WORDS, 10)
        rare = [w for w in WORDS if w not in common]
        question = "What are the 10 most common words in the above list? Answer: The top 10 words appearing most " \
                   "often in the list are:"
        answers = tuple(common)  # the ten most common words of the list as drawn (set from its counts below)

        def draw(n: int) -> list[str]:
            pool = common * 6 + rare
            return [rng.choice(pool) for _ in range(n)]
    else:
        vocab = ["".join(rng.choices(string.ascii_lowercase, k=5)) for _ in range(200)]
        weights = [1 / (rank + 1) ** 1.1 for rank in range(len(vocab))]
        question = "What are the three most frequently appeared coded words in the above text? Answer: the three " \
                   "most frequently appeared words are:"
        answers = tuple(vocab[:3])  # the three most frequent as drawn (set from the counts below)

        def draw(n: int) -> list[str]:
            return rng.choices(vocab, weights=weights, k=n)
    per_word = max(1, _count(tokenizer, " 1. apple" if task == "common_words" else " apple"))
    budget = length - _count(tokenizer, question) - 16
    words = draw(max(len(answers) * 3, budget // per_word))
    numbered = task == "common_words"
    while len(words) > len(answers) * 3 and _count(tokenizer, _join(words, numbered)) > budget:
        words = words[: int(len(words) * 0.95)]  # whole words only: the counts below are the prompt's
    counts = Counter(words).most_common()
    top = tuple(w for w, _ in counts[: len(answers)])
    return Sample(task, _join(words, numbered) + "\n" + question, top)


def _count(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _join(words: list[str], numbered: bool) -> str:
    return " ".join(f"{i + 1}. {w}" for i, w in enumerate(words)) if numbered else " ".join(words)
