"""RULER-style tasks: prompt lengths, answers that are really in the prompt, determinism, scoring, the recipe."""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import pytest

from models import CharTokenizer
from seerflex.evaluation import ruler
from seerflex.recipes import eval as eval_recipe

HAY = "It is a truth universally acknowledged, that a single man in possession of a good fortune. " * 20


@pytest.mark.parametrize("task", ruler.TASKS)
@pytest.mark.parametrize("length", [600, 2000])
def test_each_task_fits_its_length_and_its_answers_are_in_the_prompt(task, length):
    tok = CharTokenizer()
    hay = tok(HAY)["input_ids"]
    x = ruler.make_sample(task, tok, length, hay, random.Random(3))
    n = len(tok(x.prompt)["input_ids"])
    assert 0.75 * length <= n <= length, n
    body = x.prompt.rsplit("\n", 1)[0]
    if task.startswith("niah") or task == "variable_tracking":
        assert all(a in body for a in x.answers)
    else:  # word tasks: the answers are the most frequent words of the list itself
        words = [w for w in re.findall(r"[a-z]+", body)]
        top = [c for _, c in Counter(words).most_common(len(x.answers) + 1)]
        counts = Counter(words)
        assert min(counts[a] for a in x.answers) >= top[len(x.answers)]  # nothing outside beats an answer
    assert ruler.make_sample(task, tok, length, hay, random.Random(3)) == x  # same seed, same prompt


def test_score_is_the_fraction_of_answers_found():
    assert ruler.score("the numbers are 123 and 456", ("123", "456", "789")) == pytest.approx(2 / 3)
    assert ruler.score("APPLE", ("apple",)) == 1.0
    with pytest.raises(ValueError, match="unknown RULER task"):
        ruler.make_sample("qa_hotpot", CharTokenizer(), 100, [1, 2, 3], random.Random(0))


def test_eval_ruler_runs_every_scorer_and_writes_json_table_and_plot(recipe_model, tiny_text, tmp_path, monkeypatch):
    """Stand-in replies that are right only under dense attention: the averages must say so, per length and task."""
    def reply(model, tokenizer, ids, new_tokens):
        model(input_ids=ids[None], use_cache=False)  # what sparsity is recorded on
        return "DENSE" if model._routing.adapter is None else "SPARSE"

    monkeypatch.setattr(eval_recipe, "answer", reply)
    monkeypatch.setattr(ruler, "score", lambda text, answers: float(text == "DENSE"))
    out = tmp_path / "ruler"
    assert eval_recipe.main(["ruler", "model=tiny", "lengths=[640,768]", "tasks=[niah_single,common_words]",
                             "samples=2", f"haystack={tiny_text}", "scorers=[dense,pooled]", "policies=[topk:0.3]",
                             f"out={out}"]) == 0
    rows = json.loads((out / "ruler.json").read_text())["rows"]
    assert [(r["scorer"], r["average"], r["by_length"]) for r in rows] == [
        ("dense", 1.0, {"640": 1.0, "768": 1.0}), ("pooled", 0.0, {"640": 0.0, "768": 0.0})]
    assert rows[0]["density"] == 1.0 > rows[1]["density"] and len(rows[0]["by_task"]) == 4
    assert (out / "ruler_vs_length.png").stat().st_size > 0
    with pytest.raises(ValueError, match="unknown RULER task"):
        eval_recipe.main(["ruler", "model=tiny", "tasks=[qa]"])


def test_a_length_at_the_model_context_leaves_room_for_the_answer_and_one_beyond_is_refused(
        recipe_model, tiny_text, tmp_path, monkeypatch):
    asked, make = [], ruler.make_sample

    def recording(task, tokenizer, length, haystack, rng):
        asked.append(length)
        return make(task, tokenizer, length, haystack, rng)

    monkeypatch.setattr(ruler, "make_sample", recording)
    monkeypatch.setattr(eval_recipe, "answer", lambda model, tokenizer, ids, new_tokens: "")
    context = 2048  # the small Llama's max_position_embeddings
    assert eval_recipe.main(["ruler", "model=tiny", f"lengths=[1024,{context}]", "tasks=[niah_single]",
                             "samples=1", "new_tokens=16", f"haystack={tiny_text}", "scorers=[dense]",
                             f"out={tmp_path / 'r'}"]) == 0
    assert asked == [1024, context - 16] * 2  # the scored prompts, then the unscored calibration prompts
    rows = json.loads((tmp_path / "r" / "ruler.json").read_text())["rows"]
    assert list(rows[0]["by_length"]) == ["1024", str(context)]  # reported under the requested length
    with pytest.raises(ValueError, match=r"lengths \[4096\] exceed the model's context of 2048 tokens"):
        eval_recipe.main(["ruler", "model=tiny", "lengths=[1024,4096]", f"haystack={tiny_text}", "scorers=[dense]",
                          f"out={tmp_path / 'r2'}"])
    with pytest.raises(ValueError, match="new_tokens 1024 leaves too little of the model's 2048-token context"):
        eval_recipe.main(["ruler", "model=tiny", "lengths=[1024]", "new_tokens=1024", f"haystack={tiny_text}",
                          "scorers=[dense]", f"out={tmp_path / 'r3'}"])


def test_a_mass_rule_is_calibrated_on_unscored_prompts_of_every_task_and_length(recipe_model, tiny_text, tmp_path,
                                                                                monkeypatch):
    """A mass rule's density moves with task and length: calibration sees one unscored prompt of each, and the
    calibrated rule's density over the suite lands near its target."""
    scored, probes = [], []
    monkeypatch.setattr(eval_recipe, "answer", lambda model, tokenizer, ids, new_tokens: (
        scored.append(ids.tolist()), model(input_ids=ids[None], use_cache=False), "")[-1])
    resolve = eval_recipe.resolve_policy

    def recording(model, scorer, spec, windows, *rest):
        probes.extend(w.tolist() for w in windows)
        return resolve(model, scorer, spec, windows, *rest)

    monkeypatch.setattr(eval_recipe, "resolve_policy", recording)
    assert eval_recipe.main(["ruler", "model=tiny", "lengths=[1024,2048]", "tasks=[niah_single,common_words]",
                             "samples=2", f"haystack={tiny_text}", "scorers=[pooled]", "policies=[topp:density=0.4]",
                             f"out={tmp_path / 'r'}"]) == 0
    assert len(probes) == 4 and sorted(len(p) // 512 for p in probes) == [1, 1, 3, 3]  # 2 tasks x ~1000 / ~2000
    assert not any(p in scored for p in probes)
    row = json.loads((tmp_path / "r" / "ruler.json").read_text())["rows"][0]
    assert abs(row["density"] - 0.4) < 0.05
