"""Evaluation metrics: GLUE, entity-level F1 (seqeval semantics) and SQuAD EM/F1.

Every function takes the gold values first and the predictions second, as scikit-learn,
seqeval and the official SQuAD scripts do. Scales follow the reference implementations:

* GLUE metrics and entity scores are fractions in [0, 1] (scikit-learn, scipy, seqeval);
* SQuAD scores are percentages in [0, 100] (the official ``evaluate-v1.1.py`` / ``evaluate-v2.0.py``).

Degenerate inputs give 0.0 where the reference would divide by zero (scikit-learn's
``zero_division=0``; a constant input has no correlation), so model selection never meets a NaN.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import pearsonr, spearmanr

# --------------------------------------------------------------------------------------------
# GLUE: accuracy, F1, Matthews correlation, Pearson, Spearman


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"expected two 1-d sequences of the same length, got shapes {t.shape} and {p.shape}")
    return t, p


def accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    """The fraction of predictions equal to the gold label (0.0 for no examples)."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p)) if len(t) else 0.0


def f1_binary(y_true: Sequence | np.ndarray, y_pred: Sequence | np.ndarray, positive=1) -> float:
    """F1 of the positive class (scikit-learn's ``f1_score(average="binary")``, zero_division=0).

    Args:
        y_true: gold labels.
        y_pred: predicted labels.
        positive: the positive label (GLUE's MRPC and QQP: 1, "paraphrase" / "duplicate").
    """
    t, p = _pair(y_true, y_pred)
    tp = int(np.sum((t == positive) & (p == positive)))
    fp = int(np.sum((t != positive) & (p == positive)))
    fn = int(np.sum((t == positive) & (p != positive)))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def f1_macro(y_true: Sequence, y_pred: Sequence) -> float:
    """Unweighted mean of per-class F1 over the classes present in gold or predictions."""
    t, p = _pair(y_true, y_pred)
    classes = np.union1d(t, p)
    return float(np.mean([f1_binary(t, p, c) for c in classes])) if len(classes) else 0.0


def matthews_corrcoef(y_true: Sequence, y_pred: Sequence) -> float:
    """Matthews correlation coefficient, multi-class form (Gorodkin 2004; scikit-learn's).

    MCC = (c·s − t·p) / sqrt((s² − p·p)(s² − t·t)) with c correct predictions, s examples,
    t and p the per-class gold and predicted counts. 0.0 when a factor of the denominator is 0.
    """
    t, p = _pair(y_true, y_pred)
    classes, idx = np.unique(np.concatenate([t, p]), return_inverse=True)
    ti, pi = idx[: len(t)], idx[len(t):]
    t_count = np.bincount(ti, minlength=len(classes)).astype(np.float64)
    p_count = np.bincount(pi, minlength=len(classes)).astype(np.float64)
    c, s = float(np.sum(ti == pi)), float(len(t))
    denom = (s * s - p_count @ p_count) * (s * s - t_count @ t_count)
    return float((c * s - t_count @ p_count) / np.sqrt(denom)) if denom > 0 else 0.0


def pearson(y_true: Sequence[float], y_pred: Sequence[float]) -> float:
    """Pearson correlation (scipy.stats.pearsonr); 0.0 when either side is constant."""

    t, p = _pair(np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64))
    if len(t) < 2 or np.ptp(t) == 0 or np.ptp(p) == 0:
        return 0.0
    return float(pearsonr(t, p)[0])


def spearman(y_true: Sequence[float], y_pred: Sequence[float]) -> float:
    """Spearman rank correlation, ties ranked by their average (scipy.stats.spearmanr); 0.0 when constant."""

    t, p = _pair(np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64))
    if len(t) < 2 or np.ptp(t) == 0 or np.ptp(p) == 0:
        return 0.0
    return float(spearmanr(t, p)[0])


# Metric sets, one per kind of task: (y_true, y_pred) → {name: value}.


def accuracy_metrics(y_true: Sequence, y_pred: Sequence) -> dict[str, float]:
    """``{"accuracy"}`` (SST-2, MNLI, QNLI, RTE, WNLI)."""
    return {"accuracy": accuracy(y_true, y_pred)}


def accuracy_f1_metrics(y_true: Sequence, y_pred: Sequence) -> dict[str, float]:
    """``{"accuracy", "f1"}``, F1 of label 1 (MRPC, QQP)."""
    return {"accuracy": accuracy(y_true, y_pred), "f1": f1_binary(y_true, y_pred, 1)}


def mcc_metrics(y_true: Sequence, y_pred: Sequence) -> dict[str, float]:
    """``{"mcc", "accuracy"}`` (CoLA)."""
    return {"mcc": matthews_corrcoef(y_true, y_pred), "accuracy": accuracy(y_true, y_pred)}


def correlation_metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, float]:
    """``{"pearson", "spearman"}`` (STS-B and any regression task)."""
    return {"pearson": pearson(y_true, y_pred), "spearman": spearman(y_true, y_pred)}


def multiclass_metrics(y_true: Sequence, y_pred: Sequence) -> dict[str, float]:
    """``{"accuracy", "macro_f1"}`` (the generic text-classification task)."""
    return {"accuracy": accuracy(y_true, y_pred), "macro_f1": f1_macro(y_true, y_pred)}


# --------------------------------------------------------------------------------------------
# Entity-level precision / recall / F1, seqeval's default (conlleval-style) mode


def _split_tag(tag: str) -> tuple[str, str]:
    # seqeval: the prefix is the first character, the type what follows the first "-" ("_" if none)
    return tag[:1], tag[1:].split("-", maxsplit=1)[-1] or "_"


def _end_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag not in ("O", ".") and prev_type != type_


def _start_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    if tag in ("B", "S"):
        return True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag not in ("O", ".") and prev_type != type_


def get_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entity spans of one tag sequence, as seqeval's default mode finds them.

    An entity starts at B-X, or at I-X (or E-X) after O, after an entity of another type, or
    after the end of an entity; it goes on while the following tags are I-X (or E-X) of the same
    type. So ``O I-PER I-PER`` is one PER entity and ``B-PER I-LOC`` is two. IOBES tags (E-, S-)
    follow the same rules as in seqeval.

    Args:
        tags: one sentence's tags, e.g. ``["B-PER", "I-PER", "O"]``.

    Returns:
        ``[(type, first, last)]``, word indices inclusive, in order.
    """
    chunks = []
    prev_tag, prev_type, begin = "O", "", 0
    for i, chunk in enumerate([*tags, "O"]):
        tag, type_ = _split_tag(chunk)
        if _end_of_chunk(prev_tag, tag, prev_type, type_):
            chunks.append((prev_type, begin, i - 1))
        if _start_of_chunk(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return chunks


def _entity_sets(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]):
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted")
    gold_set: set[tuple[int, str, int, int]] = set()
    pred_set: set[tuple[int, str, int, int]] = set()
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted")
        gold_set.update((i, *e) for e in get_entities(g))
        pred_set.update((i, *e) for e in get_entities(p))
    return gold_set, pred_set


def _prf(tp: int, n_pred: int, n_gold: int) -> dict[str, float]:
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def entity_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro-averaged entity precision, recall and F1 (seqeval's ``precision_score`` etc., default mode).

    An entity counts as correct when its type, first and last word all match a gold entity of
    the same sentence.

    Args:
        gold: gold tags, one list per sentence.
        pred: predicted tags, the same shape.

    Returns:
        ``{"precision", "recall", "f1"}`` in [0, 1].
    """
    gold_set, pred_set = _entity_sets(gold, pred)
    return _prf(len(gold_set & pred_set), len(pred_set), len(gold_set))


def entity_report(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, dict[str, float]]:
    """Per-type scores, as seqeval's ``classification_report(output_dict=True)`` rows.

    Returns:
        ``{type: {"precision", "recall", "f1", "support"}}``, types sorted; support = gold entities.
    """
    gold_set, pred_set = _entity_sets(gold, pred)
    report = {}
    for type_ in sorted({e[1] for e in gold_set | pred_set}):
        g = {e for e in gold_set if e[1] == type_}
        p = {e for e in pred_set if e[1] == type_}
        report[type_] = {**_prf(len(g & p), len(p), len(g)), "support": len(g)}
    return report


# --------------------------------------------------------------------------------------------
# SQuAD v1.1 and v2.0 (the official evaluation scripts)

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """The official SQuAD normalisation: lowercase, drop ASCII punctuation, drop a/an/the, collapse spaces."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(gold: str, prediction: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(gold) == normalize_answer(prediction))


def token_f1(gold: str, prediction: str, empty_match: bool = False) -> float:
    """Bag-of-tokens F1 between normalised answers.

    Args:
        gold: a gold answer.
        prediction: the predicted answer.
        empty_match: SQuAD v2's rule: when either side normalises to no tokens, 1.0 if both do,
            else 0.0. v1.1 (False) scores any answer with no token in common as 0.0.
    """
    g, p = normalize_answer(gold).split(), normalize_answer(prediction).split()
    if empty_match and (not g or not p):
        return float(g == p)
    same = sum((Counter(g) & Counter(p)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def squad_v1(answers: Mapping[str, Sequence[str]], predictions: Mapping[str, str]) -> dict[str, float]:
    """SQuAD v1.1 exact match and F1, each the best over a question's gold answers (``evaluate-v1.1.py``).

    Args:
        answers: question id → its gold answer texts.
        predictions: question id → predicted text; a missing question scores 0, as officially.

    Returns:
        ``{"exact_match", "f1"}`` in percent.
    """
    em = f1 = 0.0
    for qid, golds in answers.items():
        if qid in predictions:
            em += max(exact_match(g, predictions[qid]) for g in golds)
            f1 += max(token_f1(g, predictions[qid]) for g in golds)
    n = len(answers)
    return {"exact_match": 100.0 * em / n if n else 0.0, "f1": 100.0 * f1 / n if n else 0.0}


def _best_threshold(predictions, scores, na_probs, has_answer) -> tuple[float, float]:
    # evaluate-v2.0.py find_best_thresh: start from "no answer everywhere", then admit the
    # answers one by one in order of rising no-answer probability.
    cur = best = sum(1 for qid in has_answer if not has_answer[qid])
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if has_answer[qid]:
            cur += scores[qid]
        elif predictions.get(qid, ""):
            cur -= 1
        if cur > best:
            best, best_thresh = cur, na_probs[qid]
    return 100.0 * best / len(scores), float(best_thresh)


def squad_v2(answers: Mapping[str, Sequence[str]], predictions: Mapping[str, str],
             na_probs: Mapping[str, float] | None = None, na_prob_thresh: float = 1.0) -> dict[str, float]:
    """SQuAD v2.0 exact and F1 with the HasAns / NoAns breakdown (``evaluate-v2.0.py``).

    A question without an answer has ``answers[qid] == []``; predicting the empty string is
    the right answer to it. Gold answers that normalise to nothing are dropped before scoring.

    Args:
        answers: question id → gold answer texts.
        predictions: question id → predicted text ("" = no answer); a missing one counts as "".
        na_probs: question id → no-answer score (higher = more likely no answer). A question
            whose score is above ``na_prob_thresh`` is scored as predicting no answer. When given,
            the best threshold for EM and for F1 is searched as the official script does.
        na_prob_thresh: the threshold applied to ``na_probs``.

    Returns:
        ``exact``, ``f1``, ``total``, ``HasAns_exact``, ``HasAns_f1``, ``HasAns_total``,
        ``NoAns_exact``, ``NoAns_f1``, ``NoAns_total`` (the last three only when there are such
        questions, as officially) and, with ``na_probs``, ``best_exact``, ``best_exact_thresh``,
        ``best_f1``, ``best_f1_thresh``. Scores in percent.
    """
    has_answer, exact, f1 = {}, {}, {}
    for qid, golds in answers.items():
        has_answer[qid] = bool(golds)  # officially from the raw list, before normalisation
        golds = [g for g in golds if normalize_answer(g)] or [""]
        pred = predictions.get(qid, "")
        exact[qid] = max(exact_match(g, pred) for g in golds)
        f1[qid] = max(token_f1(g, pred, empty_match=True) for g in golds)
    probs = {qid: 0.0 for qid in answers} if na_probs is None else {qid: float(na_probs[qid]) for qid in answers}

    def thresholded(scores: dict[str, float]) -> dict[str, float]:
        return {qid: (float(not has_answer[qid]) if probs[qid] > na_prob_thresh else s) for qid, s in scores.items()}

    exact_t, f1_t = thresholded(exact), thresholded(f1)
    n = len(answers)
    out = {"exact": 100.0 * sum(exact_t.values()) / n if n else 0.0,
           "f1": 100.0 * sum(f1_t.values()) / n if n else 0.0, "total": n}
    for name, wanted in (("HasAns", True), ("NoAns", False)):
        ids = [qid for qid in answers if has_answer[qid] == wanted]
        if ids:
            out[f"{name}_exact"] = 100.0 * sum(exact_t[q] for q in ids) / len(ids)
            out[f"{name}_f1"] = 100.0 * sum(f1_t[q] for q in ids) / len(ids)
            out[f"{name}_total"] = len(ids)
    if na_probs is not None and n:
        out["best_exact"], out["best_exact_thresh"] = _best_threshold(predictions, exact, probs, has_answer)
        out["best_f1"], out["best_f1_thresh"] = _best_threshold(predictions, f1, probs, has_answer)
    return out
