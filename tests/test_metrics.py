"""Metrics against hand-checked values and reference implementations (scikit-learn, scipy,
a literal transcription of seqeval's chunking, an independent SQuAD normalisation)."""

import random
import re

import numpy as np
import pytest

from electrolite.tasks.metrics import (
    accuracy,
    accuracy_f1_metrics,
    correlation_metrics,
    entity_report,
    entity_scores,
    exact_match,
    f1_binary,
    f1_macro,
    get_entities,
    matthews_corrcoef,
    mcc_metrics,
    normalize_answer,
    pearson,
    spearman,
    squad_v1,
    squad_v2,
    token_f1,
)

# --------------------------------------------------------------------------------------------
# GLUE

GOLD = [1, 0, 1, 1, 0]
PRED = [1, 1, 1, 0, 0]  # tp 2, fp 1, fn 1, tn 1


def test_glue_hand_checked():
    assert accuracy(GOLD, PRED) == pytest.approx(0.6)
    assert f1_binary(GOLD, PRED) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    # (tp·tn − fp·fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (2 − 1) / sqrt(3·3·2·2)
    assert matthews_corrcoef(GOLD, PRED) == pytest.approx(1 / 6)
    assert accuracy_f1_metrics(GOLD, PRED) == pytest.approx({"accuracy": 0.6, "f1": 2 / 3})
    assert mcc_metrics(GOLD, PRED)["mcc"] == pytest.approx(1 / 6)
    x, y = [1, 2, 3, 4], [2, 4, 5, 4]
    assert pearson(x, y) == pytest.approx(3.5 / np.sqrt(5 * 4.75))
    # ranks of y with the tie averaged: 1, 2.5, 4, 2.5
    assert spearman(x, y) == pytest.approx(3 / np.sqrt(5 * 4.5))
    assert correlation_metrics(x, y) == pytest.approx({"pearson": 3.5 / np.sqrt(23.75), "spearman": 3 / np.sqrt(22.5)})


def test_glue_degenerate_cases_are_zero_not_nan():
    assert f1_binary([0, 0], [0, 0]) == 0.0
    assert matthews_corrcoef([1, 1, 1], [1, 1, 1]) == 0.0
    assert matthews_corrcoef([0, 1, 0], [1, 1, 1]) == 0.0
    assert pearson([1, 2, 3], [2, 2, 2]) == 0.0
    assert spearman([1, 1, 1], [1, 2, 3]) == 0.0
    assert accuracy([], []) == 0.0
    with pytest.raises(ValueError):
        accuracy([1, 2], [1])


def test_glue_against_sklearn_and_scipy():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for trial in range(30):
        n = int(rng.integers(5, 200))
        k = 2 if trial < 15 else int(rng.integers(3, 6))
        t, p = rng.integers(0, k, n), rng.integers(0, k, n)
        assert accuracy(t, p) == pytest.approx(sklearn_metrics.accuracy_score(t, p))
        assert matthews_corrcoef(t, p) == pytest.approx(sklearn_metrics.matthews_corrcoef(t, p))
        assert f1_macro(t, p) == pytest.approx(sklearn_metrics.f1_score(t, p, average="macro", zero_division=0))
        if k == 2:
            assert f1_binary(t, p) == pytest.approx(sklearn_metrics.f1_score(t, p, zero_division=0))
        a, b = rng.normal(size=n), rng.normal(size=n)
        b = np.round(a + b, 1)  # ties for spearman
        assert pearson(a, b) == pytest.approx(stats.pearsonr(a, b)[0])
        assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b)[0])


# --------------------------------------------------------------------------------------------
# Entities (seqeval default mode)


def test_get_entities_edge_cases():
    assert get_entities(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]
    assert get_entities(["I-PER", "I-PER", "O"]) == [("PER", 0, 1)]  # I- after O starts one
    assert get_entities(["B-PER", "I-LOC"]) == [("PER", 0, 0), ("LOC", 1, 1)]  # type change
    assert get_entities(["B-PER", "B-PER"]) == [("PER", 0, 0), ("PER", 1, 1)]
    assert get_entities(["O", "I-ORG", "B-ORG", "I-ORG"]) == [("ORG", 1, 1), ("ORG", 2, 3)]
    assert get_entities(["B-LOC", "I-LOC", "I-PER", "I-PER"]) == [("LOC", 0, 1), ("PER", 2, 3)]
    assert get_entities(["B-MISC", "I-MISC"]) == [("MISC", 0, 1)]  # an entity at the very end
    assert get_entities(["S-PER", "B-LOC", "E-LOC", "O"]) == [("PER", 0, 0), ("LOC", 1, 2)]  # IOBES
    assert get_entities(["O", "O"]) == []
    assert get_entities([]) == []


def test_entity_scores_seqeval_readme_example():
    gold = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    pred = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    assert entity_scores(gold, pred) == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})


def test_entity_scores_hand_checked():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "I-ORG", "O", "B-MISC"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["I-ORG", "I-ORG", "B-ORG", "O", "B-MISC"]]
    # gold: PER(0,1) LOC(3) | ORG(0,2) MISC(4) = 4; pred: PER(0,1) ORG(3) | ORG(0,1) ORG(2) MISC(4) = 5; correct: 2
    scores = entity_scores(gold, pred)
    assert scores == pytest.approx({"precision": 0.4, "recall": 0.5, "f1": 2 * 0.4 * 0.5 / 0.9})
    report = entity_report(gold, pred)
    assert list(report) == ["LOC", "MISC", "ORG", "PER"]
    assert report["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert report["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert report["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert entity_scores([["O"]], [["O"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    with pytest.raises(ValueError):
        entity_scores([["O", "O"]], [["O"]])


def _seqeval_get_entities(seq):
    """seqeval 1.2.2 ``get_entities`` (default mode, prefix tags), transcribed literally."""
    def end_of_chunk(prev_tag, tag, prev_type, type_):
        chunk_end = False
        if prev_tag == "E":
            chunk_end = True
        if prev_tag == "S":
            chunk_end = True
        if prev_tag == "B" and tag == "B":
            chunk_end = True
        if prev_tag == "B" and tag == "S":
            chunk_end = True
        if prev_tag == "B" and tag == "O":
            chunk_end = True
        if prev_tag == "I" and tag == "B":
            chunk_end = True
        if prev_tag == "I" and tag == "S":
            chunk_end = True
        if prev_tag == "I" and tag == "O":
            chunk_end = True
        if prev_tag != "O" and prev_tag != "." and prev_type != type_:
            chunk_end = True
        return chunk_end

    def start_of_chunk(prev_tag, tag, prev_type, type_):
        chunk_start = False
        if tag == "B":
            chunk_start = True
        if tag == "S":
            chunk_start = True
        if prev_tag == "E" and tag == "E":
            chunk_start = True
        if prev_tag == "E" and tag == "I":
            chunk_start = True
        if prev_tag == "S" and tag == "E":
            chunk_start = True
        if prev_tag == "S" and tag == "I":
            chunk_start = True
        if prev_tag == "O" and tag == "E":
            chunk_start = True
        if prev_tag == "O" and tag == "I":
            chunk_start = True
        if tag != "O" and tag != "." and prev_type != type_:
            chunk_start = True
        return chunk_start

    if any(isinstance(s, list) for s in seq):
        seq = [item for sublist in seq for item in sublist + ["O"]]
    prev_tag, prev_type, begin_offset, chunks = "O", "", 0, []
    for i, chunk in enumerate(seq + ["O"]):
        tag = chunk[0]
        type_ = chunk[1:].split("-", maxsplit=1)[-1] or "_"
        if end_of_chunk(prev_tag, tag, prev_type, type_):
            chunks.append((prev_type, begin_offset, i - 1))
        if start_of_chunk(prev_tag, tag, prev_type, type_):
            begin_offset = i
        prev_tag, prev_type = tag, type_
    return chunks


def _seqeval_micro(gold, pred):
    """seqeval's micro precision/recall/F1: sets of entities over the flattened corpus."""
    g, p = set(_seqeval_get_entities(gold)), set(_seqeval_get_entities(pred))
    tp = len(g & p)
    precision = tp / len(p) if p else 0.0
    recall = tp / len(g) if g else 0.0
    denom = precision + recall
    return precision, recall, (2 * precision * recall / denom if denom else 0.0)


def test_entities_against_seqeval_transcription_on_random_tags():
    rng = random.Random(0)
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG", "E-LOC", "S-PER"]
    for _ in range(300):
        gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(rng.randint(1, 5))]
        pred = [[rng.choice(tags) if rng.random() < 0.4 else t for t in s] for s in gold]
        for s in gold:
            assert get_entities(s) == _seqeval_get_entities(s)
        p, r, f = _seqeval_micro(gold, pred)
        assert entity_scores(gold, pred) == pytest.approx({"precision": p, "recall": r, "f1": f})


# --------------------------------------------------------------------------------------------
# SQuAD


def _reference_normalize(text):
    """An independent implementation of the official normalisation (by character codes and word pieces)."""
    ascii_punct = {chr(c) for c in range(33, 127) if not chr(c).isalnum()}
    text = "".join(c for c in text.lower() if c not in ascii_punct)
    pieces = re.split(r"(\W+)", text)  # alternating word / non-word runs
    pieces = [" " if p in ("a", "an", "the") else p for p in pieces]
    return " ".join("".join(pieces).split())


@pytest.mark.parametrize("raw, expected", [
    ("The  Quick, brown FOX!", "quick brown fox"),
    ("an apple a day", "apple day"),
    ("theater anathema", "theater anathema"),  # articles only as whole words
    ("A.B.C.", "abc"),
    ("Denver Broncos.", "denver broncos"),
    ("  the\tEnd\n ", "end"),
    ("Saint-Étienne", "saintétienne"),  # ASCII punctuation only; accents kept, lowercased
    ("“quoted”", "“quoted”"),  # typographic quotes are not string.punctuation
    ("the", ""),
    ("“the”", "“ ”"),  # \b sees a word boundary next to the typographic quotes
    ("$1,000", "1000"),
    ("rock 'n' roll", "rock n roll"),
])
def test_normalize_answer_cases(raw, expected):
    assert normalize_answer(raw) == expected
    assert _reference_normalize(raw) == expected


def test_normalize_answer_against_independent_implementation():
    rng = random.Random(1)
    alphabet = list("abcdeinhtAT .,;:!?'\"-()$%&\t") + ["the", "an", "a", "The", "An", " é", "ß", "“", "—"]
    for _ in range(2000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 25)))
        assert normalize_answer(s) == _reference_normalize(s), repr(s)


def test_squad_token_scores():
    assert exact_match("The Denver Broncos", "denver broncos!") == 1.0
    assert token_f1("the cat sat on the mat", "cat on mat") == pytest.approx(2 * 0.75 / 1.75)
    assert token_f1("cat", "dog") == 0.0
    assert token_f1("the", "a") == 0.0  # v1.1: no tokens on either side scores 0
    assert token_f1("the", "a", empty_match=True) == 1.0  # v2.0: both empty is a match
    assert token_f1("", "cat", empty_match=True) == 0.0
    assert token_f1("cat cat dog", "cat dog dog") == pytest.approx(2 / 3)  # bag counts: 2 in common of 3


def test_squad_v1_max_over_gold_answers():
    answers = {"q1": ["Denver Broncos", "the Denver Broncos"], "q2": ["1990"], "q3": ["Santa Clara, California"]}
    predictions = {"q1": "Broncos", "q2": "in 1990", "q3": "santa clara california"}
    scores = squad_v1(answers, predictions)
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (2 / 3 + 2 / 3 + 1) / 3)
    missing = squad_v1(answers, {"q3": "Santa Clara, California"})  # unanswered questions score 0
    assert missing == pytest.approx({"exact_match": 100 / 3, "f1": 100 / 3})


def test_squad_v2_breakdown_and_threshold_search():
    answers = {"q1": ["Paris"], "q2": [], "q3": ["1990"]}
    predictions = {"q1": "Paris", "q2": "London", "q3": "in 1990"}
    na = {"q1": 0.1, "q2": 0.8, "q3": 0.5}
    out = squad_v2(answers, predictions, na, na_prob_thresh=1.0)
    assert out["exact"] == pytest.approx(100 / 3)
    assert out["f1"] == pytest.approx(100 * (1 + 0 + 2 / 3) / 3)
    assert out["HasAns_exact"] == pytest.approx(50.0) and out["HasAns_f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert out["NoAns_exact"] == 0.0 and out["HasAns_total"] == 2 and out["NoAns_total"] == 1 and out["total"] == 3
    # best EM: admit q1 (0.1) → 2 right of 3; best F1: admit q1 and q3 (0.5), keep q2 as no answer
    assert out["best_exact"] == pytest.approx(200 / 3) and out["best_exact_thresh"] == pytest.approx(0.1)
    assert out["best_f1"] == pytest.approx(100 * (1 + 1 + 2 / 3) / 3) and out["best_f1_thresh"] == pytest.approx(0.5)
    at = squad_v2(answers, predictions, na, na_prob_thresh=0.6)  # q2 is now predicted unanswerable
    assert at["exact"] == pytest.approx(200 / 3) and at["NoAns_exact"] == 100.0
    plain = squad_v2(answers, {"q1": "Paris", "q2": "", "q3": "1990"})
    assert plain["exact"] == 100.0 and plain["f1"] == 100.0 and "best_f1" not in plain


def test_entities_against_the_seqeval_package_on_random_tags():
    seqeval_metrics = pytest.importorskip("seqeval.metrics")
    rng = random.Random(1)
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "I-MISC"]
    for _ in range(300):
        gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(rng.randint(1, 5))]
        pred = [[rng.choice(tags) if rng.random() < 0.4 else t for t in s] for s in gold]
        ours = entity_scores(gold, pred)
        assert ours["precision"] == pytest.approx(seqeval_metrics.precision_score(gold, pred, zero_division=0))
        assert ours["recall"] == pytest.approx(seqeval_metrics.recall_score(gold, pred, zero_division=0))
        assert ours["f1"] == pytest.approx(seqeval_metrics.f1_score(gold, pred, zero_division=0))
