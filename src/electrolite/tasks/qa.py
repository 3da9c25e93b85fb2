"""Extractive QA: SQuAD v1.1 / v2.0 json, doc-stride windows, n-best span decoding.

Windows follow BERT and ELECTRA's ``run_squad``: the question (at most ``max_query_length``
tokens) and a window of the context, ``[CLS] question [SEP] context-window [SEP]``; windows
start every ``doc_stride`` context tokens until one reaches the end of the context. A token's
start score is used only in the window where it has the most context on both sides. Answers
are cut from the original context by the tokenizer's character offsets, so a decoded answer
is always an exact substring of the context.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from electrolite.data.textfiles import lone_surrogate
from electrolite.data.tokenizer import special_tokens
from electrolite.errors import UserError, parse_json, shown, shown_repr
from electrolite.tasks.family import Family, Raw, Run, record_defaults
from electrolite.tasks.features import Features, prepared_tokenizer, read_text
from electrolite.tasks.metrics import squad_v1, squad_v2


@dataclass
class Answer:
    text: str
    start: int
    """Character offset of the answer in the context."""


@dataclass
class QAExample:
    """One question about one context.

    Attributes:
        qid: the question id.
        question: the question.
        context: the paragraph.
        answers: gold answers (the first is trained on); empty when unanswerable or unlabelled.
        is_impossible: SQuAD v2: the context does not answer the question.
        title: the article's title.
    """

    qid: str
    question: str
    context: str
    answers: list[Answer] = field(default_factory=list)
    is_impossible: bool = False
    title: str = ""


def _get(obj: object, key: str, kind: type | tuple[type, ...], where: str):
    if not isinstance(obj, dict) or key not in obj:
        raise UserError(f"{where}: missing {key!r}")
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or isinstance(value, bool):
        names = " or ".join(k.__name__ for k in kinds)
        raise UserError(f"{where}: {key!r} should be {names}, got {type(value).__name__}")
    if isinstance(value, str) and lone_surrogate(value):  # only JSON escapes make one
        raise UserError(f"{where}: {key!r} holds a lone surrogate escape (not Unicode text)")
    return value


def read_squad(path: str, version: int = 1) -> list[list[QAExample]]:
    """Reads a SQuAD json file, checking every answer against its context.

    Args:
        path: the ``*-v1.1.json`` or ``*-v2.0.json`` file.
        version: 1 (every question has an answer) or 2 (``is_impossible`` questions allowed).

    Returns:
        The examples, one list per article, in file order.

    Raises:
        UserError: unreadable or malformed json (naming the file), a structure error (naming the
            article or question), an answer whose text is not the context at ``answer_start``,
            a question without answers in v1 data, a repeated question id.
    """
    data = parse_json(read_text(path), str(path), document=True)
    articles = _get(data, "data", list, path)
    seen: set[str] = set()
    out = []
    for a, article in enumerate(articles):
        where = f"{path}: article {a}"
        title = article.get("title", "") if isinstance(article, dict) else ""
        title = title if isinstance(title, str) and not lone_surrogate(title) else ""  # kept for the record only
        examples = []
        for p, paragraph in enumerate(_get(article, "paragraphs", list, where)):
            context = _get(paragraph, "context", str, f"{where} paragraph {p}")
            for q, qa in enumerate(_get(paragraph, "qas", list, f"{where} paragraph {p}")):
                qid = str(_get(qa, "id", (str, int), f"{where} paragraph {p} question {q}"))
                at = f"{path}: question {shown(qid)}"
                if qid in seen:
                    raise UserError(f"{at}: the id occurs twice")
                seen.add(qid)
                question = _get(qa, "question", str, at)
                impossible = bool(qa.get("is_impossible", False))
                if impossible and version == 1:
                    raise UserError(f"{at}: is_impossible in SQuAD v1.1 data (use squad2)")
                answers = []
                for raw in [] if impossible else _get(qa, "answers", list, at):
                    text = _get(raw, "text", str, at)
                    start = _get(raw, "answer_start", int, at)
                    found = context[start:start + len(text)] if start >= 0 else ""
                    if found != text:
                        raise UserError(f"{at}: answer {shown_repr(text)} is not the context at answer_start "
                                        f"{shown_repr(start)} (the context there reads {shown_repr(found)})")
                    answers.append(Answer(text, start))
                if not impossible and not answers:
                    raise UserError(f"{at}: no answers (is_impossible is not set)")
                examples.append(QAExample(qid, question, context, answers, impossible, title))
        out.append(examples)
    if not seen:
        raise UserError(f"{path}: no questions")
    return out


# --------------------------------------------------------------------------------------------
# Windows


@dataclass
class QAFeatures(Features):
    """``Features`` of question + context windows.

    Attributes:
        example_index: (N,) the example each window belongs to.
        offsets: N arrays (T_i, 2): each token's [start, end) characters in the context,
            (-1, -1) for question and special tokens.
        max_context: N arrays (T_i,) bool: this window is where the token has the most context.
        start_positions, end_positions: (N,) gold token positions when training (0, the [CLS]
            position, when the answer is not wholly in the window or there is none), else None.
        skipped: ids of questions left out of training because the answer does not start and
            end on token boundaries (e.g. "gold" inside the single token "golden").
    """

    example_index: np.ndarray | None = None
    offsets: list[np.ndarray] | None = None
    max_context: list[np.ndarray] | None = None
    start_positions: np.ndarray | None = None
    end_positions: np.ndarray | None = None
    skipped: list[str] = field(default_factory=list)

    def _per_sequence_fields(self) -> dict[str, np.ndarray]:
        if self.start_positions is None:
            return {}
        if self.end_positions is None:
            raise TypeError("QAFeatures with start_positions but no end_positions")
        return {"start_positions": self.start_positions, "end_positions": self.end_positions}


def _windows(n_tokens: int, max_tokens: int, stride: int) -> list[tuple[int, int]]:
    """(start, length) of each context window, as BERT's doc_spans."""
    spans, start = [], 0
    while True:
        length = min(n_tokens - start, max_tokens)
        spans.append((start, length))
        if start + length >= n_tokens:
            return spans
        start += min(length, stride)


def _max_context(spans: list[tuple[int, int]], n_tokens: int) -> list[np.ndarray]:
    """For each window, which of its tokens have their best context there (earlier window wins ties)."""
    best_score = np.full(n_tokens, -np.inf)
    best_span = np.zeros(n_tokens, dtype=np.int64)
    for k, (start, length) in enumerate(spans):
        pos = np.arange(start, start + length)
        score = np.minimum(pos - start, start + length - 1 - pos) + 0.01 * length
        better = score > best_score[pos]
        best_score[pos[better]] = score[better]
        best_span[pos[better]] = k
    return [best_span[start:start + length] == k for k, (start, length) in enumerate(spans)]


def _answer_tokens(offsets: np.ndarray, answer: Answer) -> tuple[int, int] | None:
    """Context token positions [first, last] of the answer (whitespace around it ignored), or
    None when it does not start and end on token boundaries."""
    text = answer.text
    start = answer.start + len(text) - len(text.lstrip())
    end = answer.start + len(text.rstrip())
    if end <= start:
        return None
    inside = np.flatnonzero((offsets[:, 1] > start) & (offsets[:, 0] < end))
    if not len(inside) or offsets[inside[0], 0] != start or offsets[inside[-1], 1] != end:
        return None
    return int(inside[0]), int(inside[-1])


def encode_qa(examples: Sequence[QAExample], tokenizer: Tokenizer, max_length: int = 384,
              doc_stride: int = 128, max_query_length: int = 64, training: bool = False) -> QAFeatures:
    """Splits each (question, context) into doc-stride windows.

    Args:
        examples: the examples.
        tokenizer: the model's tokenizer (not modified); its [CLS] and [SEP] frame the windows.
        max_length: tokens per window, specials included.
        doc_stride: context tokens between the starts of consecutive windows.
        max_query_length: the question is cut to this many tokens.
        training: add start/end positions of the first answer (v2 unanswerable: 0, 0); examples
            whose answer is not on token boundaries are left out (listed in ``skipped``).

    Returns:
        ``QAFeatures``, windows in example order.
    """
    if doc_stride < 1:
        raise UserError(f"doc_stride must be at least 1, got {doc_stride}")
    if max_length - max_query_length - 3 < 1:
        raise UserError(f"max_length {max_length} leaves no room for the context after a question of "
                        f"{max_query_length} tokens")
    tok = prepared_tokenizer(tokenizer, None)
    specials = special_tokens(tok)
    contexts = list(dict.fromkeys(ex.context for ex in examples))
    context_enc = dict(zip(contexts, tok.encode_batch(contexts, add_special_tokens=False)))
    question_enc = tok.encode_batch([ex.question for ex in examples], add_special_tokens=False)
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # context → ids (C,), offsets (C, 2)
    ids, types, index, offsets, max_ctx, starts, ends, skipped = [], [], [], [], [], [], [], []
    for e, (ex, q_enc) in enumerate(zip(examples, question_enc)):
        if ex.context not in cache:
            enc = context_enc[ex.context]
            cache[ex.context] = (np.array(enc.ids, dtype=np.int64),
                                 np.array(enc.offsets, dtype=np.int64).reshape(-1, 2))
        c_ids, c_off = cache[ex.context]
        answer = None
        if training and not ex.is_impossible:
            if not ex.answers:
                raise ValueError(f"question {ex.qid} has no answer to train on")
            answer = _answer_tokens(c_off, ex.answers[0])
            if answer is None:
                skipped.append(ex.qid)
                continue
        q_ids = np.array(q_enc.ids[:max_query_length], dtype=np.int64)
        head = np.concatenate([[specials.cls_token_id], q_ids, [specials.sep_token_id]])
        spans = _windows(len(c_ids), max_length - len(head) - 1, doc_stride)
        for (start, length), is_max in zip(spans, _max_context(spans, len(c_ids))):
            ids.append(np.concatenate([head, c_ids[start:start + length], [specials.sep_token_id]]))
            types.append(np.concatenate([np.zeros(len(head), np.int64), np.ones(length + 1, np.int64)]))
            off = np.full((len(ids[-1]), 2), -1, dtype=np.int64)
            off[len(head):len(head) + length] = c_off[start:start + length]
            offsets.append(off)
            mask = np.zeros(len(ids[-1]), dtype=bool)
            mask[len(head):len(head) + length] = is_max
            max_ctx.append(mask)
            index.append(e)
            if training:
                first = last = 0
                if answer is not None and start <= answer[0] and answer[1] < start + length:
                    first, last = answer[0] - start + len(head), answer[1] - start + len(head)
                starts.append(first)
                ends.append(last)
    return QAFeatures(ids, types, None, example_index=np.array(index, dtype=np.int64), offsets=offsets,
                      max_context=max_ctx,
                      start_positions=np.array(starts, dtype=np.int64) if training else None,
                      end_positions=np.array(ends, dtype=np.int64) if training else None, skipped=skipped)


# --------------------------------------------------------------------------------------------
# Decoding


@dataclass
class QAPrediction:
    """The decoded answer to one question.

    Attributes:
        qid: the question id.
        text: the best span's text, cut from the context ("" when no span was valid).
        start, end: its [start, end) characters in the context (-1 when none).
        score: its start + end logit.
        null_score: the [CLS] start + end logit, lowest over the windows (SQuAD v2).
        no_answer_score: ``null_score - score``; predict no answer when above the threshold.
        n_best: up to n_best_size candidates ``{"text", "start", "end", "score", "probability"}``,
            best first, probabilities a softmax over their scores.
    """

    qid: str
    text: str
    start: int
    end: int
    score: float
    null_score: float
    no_answer_score: float
    n_best: list[dict] = field(default_factory=list)

    def answer(self, threshold: float | None = None) -> str:
        """The final answer: "" when ``threshold`` is set and ``no_answer_score`` exceeds it (v2)."""
        return "" if threshold is not None and self.no_answer_score > threshold else self.text


def _top(values: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    idx = np.flatnonzero(allowed)
    return idx[np.argsort(-values[idx], kind="stable")[:k]]


def snap_to_words(context: str, start: int, end: int) -> tuple[int, int]:
    """Widen [start, end) so it neither starts nor ends inside a word (letters and digits), as
    BERT's and ELECTRA's SQuAD decoders answer with whole original words, not sub-word pieces."""
    while 0 < start < len(context) and context[start - 1].isalnum() and context[start].isalnum():
        start -= 1
    while 0 < end < len(context) and context[end - 1].isalnum() and context[end].isalnum():
        end += 1
    return start, end


def decode_qa(examples: Sequence[QAExample], features: QAFeatures, start_logits, end_logits,
              n_best_size: int = 20, max_answer_length: int = 30) -> list[QAPrediction]:
    """Best answer spans across each example's windows.

    A candidate starts at one of a window's ``n_best_size`` best start tokens (a context token
    where the window has the most context) and ends at one of its best end tokens (a context
    token), no earlier, and spans at most ``max_answer_length`` tokens.

    Args:
        examples: the examples that were encoded.
        features: ``encode_qa(examples, ...)``.
        start_logits, end_logits: per window, a logit per token ((N, T) padded or ragged).
        n_best_size: candidates kept per window and per answer.
        max_answer_length: the longest answer, in tokens.

    Returns:
        One ``QAPrediction`` per example, in order.
    """
    by_example: dict[int, list[int]] = {}
    if features.example_index is None:
        raise TypeError("QAFeatures without example_index (not made by encode_qa)")
    for f, e in enumerate(features.example_index):
        by_example.setdefault(int(e), []).append(f)
    predictions = []
    for e, ex in enumerate(examples):
        candidates, null_score = [], math.inf
        for f in by_example.get(e, []):
            n = int(features.lengths[f])
            s_logit = np.asarray(start_logits[f], dtype=np.float64)[:n]
            e_logit = np.asarray(end_logits[f], dtype=np.float64)[:n]
            null_score = min(null_score, float(s_logit[0] + e_logit[0]))
            if features.offsets is None or features.max_context is None:
                raise TypeError("QAFeatures without offsets or max_context (not made by encode_qa)")
            off = features.offsets[f]
            in_context = off[:, 0] >= 0
            s_idx = _top(s_logit, in_context & features.max_context[f], n_best_size)
            e_idx = _top(e_logit, in_context, n_best_size)
            s_grid, e_grid = np.meshgrid(s_idx, e_idx, indexing="ij")  # (S, E)
            ok = (e_grid >= s_grid) & (e_grid - s_grid + 1 <= max_answer_length)
            for s, t in zip(s_grid[ok], e_grid[ok]):
                candidates.append((float(s_logit[s] + e_logit[t]), *snap_to_words(ex.context, int(off[s, 0]), int(off[t, 1]))))
        candidates.sort(key=lambda c: -c[0])
        n_best: list[dict[str, Any]] = []  # {"text", "start", "end", "score", "probability"}
        seen: set[str] = set()
        for score, start, end in candidates:
            text = ex.context[start:end]
            if text in seen:
                continue
            seen.add(text)
            n_best.append({"text": text, "start": start, "end": end, "score": score})
            if len(n_best) == n_best_size:
                break
        if n_best:
            scores = np.array([c["score"] for c in n_best])
            probs = np.exp(scores - scores.max())
            for c, p in zip(n_best, probs / probs.sum()):
                c["probability"] = float(p)
            best = n_best[0]
            predictions.append(QAPrediction(ex.qid, best["text"], best["start"], best["end"], best["score"],
                                            null_score, null_score - best["score"], n_best))
        else:
            null_score = 0.0 if math.isinf(null_score) else null_score
            predictions.append(QAPrediction(ex.qid, "", -1, -1, 0.0, null_score, math.inf, []))
    return predictions


def squad_metrics(examples: Sequence[QAExample], predictions: Sequence[QAPrediction], version: int = 1,
                  threshold: float = 0.0) -> dict[str, float]:
    """Official SQuAD scores of decoded predictions (percent).

    Args:
        examples: the gold examples.
        predictions: ``decode_qa`` output for them.
        version: 1 (EM, F1) or 2 (no-answer threshold applied, HasAns/NoAns and best threshold).
        threshold: v2: predict no answer when ``no_answer_score`` exceeds it.

    Returns:
        v1: ``{"exact_match", "f1"}``; v2: ``squad_v2``'s keys.
    """
    answers = {ex.qid: [a.text for a in ex.answers] for ex in examples}
    texts = {p.qid: p.text for p in predictions}
    if version == 1:
        return squad_v1(answers, texts)
    na = {p.qid: p.no_answer_score for p in predictions}
    return squad_v2(answers, texts, na_probs=na, na_prob_thresh=threshold)


class QuestionAnswering(Family):
    """Extractive QA (SQuAD): start and end logits per token, decoded into a span of the context."""

    name = "qa"
    outputs = ("start_logits", "end_logits")
    per_token = True
    hf_labelled = False

    def _decode(self, task, raw: Raw, examples, features) -> list[QAPrediction]:
        return decode_qa(examples, features, raw["start_logits"], raw["end_logits"],
                         max_answer_length=task.max_answer_length or 30)

    def score(self, task, raw: Raw, examples: list, features, labels: Sequence[str]):
        preds = self._decode(task, raw, examples, features)
        threshold = 0.0 if task.squad_version == 2 else None  # v1 has no no-answer: the metric reads p.text
        rows = [{"id": ex.qid, "answer": p.answer(threshold), "score": round(float(p.score), 4)}
                for ex, p in zip(examples, preds)]
        return task.metrics(examples, preds), rows

    def predict(self, task, records, tokenizer, labels, run: Run):
        question, context = task.text_fields[:2]
        examples = [QAExample(str(i), r[question], r[context], [], False, "") for i, r in enumerate(records)]
        features = task.encode(examples, tokenizer)
        for p in self._decode(task, run(features), examples, features):
            yield {"answer": p.text, "start": p.start, "end": p.end, "score": round(float(p.score), 4)}

    def hf_record(self, labels, max_positions):
        return {**record_defaults(self, "squad2", ["question", "context"], [], min(384, max_positions)),
                "doc_stride": 128, "max_query_length": 64, "max_answer_length": 30}


QA = QuestionAnswering()
