"""Token classification (NER): CoNLL column files, sub-word label alignment, entity decoding.

Column files (CoNLL-2003 and the generic ``token-classification`` task): one token per line,
the token first and its tag last (columns separated by tabs when the line has one, else by
spaces), a blank line between sentences, ``-DOCSTART-`` lines skipped. JSON lines with
``tokens`` and ``tags`` (or ``ner_tags``) lists are read too. Tags are BIO/IOB2 (IOB1 and
IOBES read as well; entities are decoded as seqeval does).

Each word is labelled on its first sub-word; the other sub-words and the specials get
``IGNORE_INDEX``. Words past ``max_length`` are cut off and predicted as ``O``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from electrolite.data.textfiles import lone_surrogate
from electrolite.errors import UserError, parse_json, shown, shown_repr
from electrolite.heads import IGNORE_INDEX
from electrolite.tasks.family import Family, Raw, Run, record_defaults
from electrolite.tasks.features import Features, file_lines, prepared_tokenizer
from electrolite.tasks.metrics import get_entities

_TAG = re.compile(r"O|[BIES]-\S.*")
_PREFIX_ORDER = {"B": 0, "I": 1, "E": 2, "S": 3}


@dataclass
class Sentence:
    """One sentence of pre-split words.

    Attributes:
        words: the tokens (words) of the sentence.
        tags: one tag per word, or None when unlabelled.
        line: the file line (JSONL: record) where the sentence starts, 1-based.
        source: the file it came from.
    """

    words: list[str]
    tags: list[str] | None = None
    line: int = 0
    source: str = ""


def _check_tag(tag: str, where: str) -> str:
    if not _TAG.fullmatch(tag):
        raise UserError(f"{where}: tag {shown_repr(tag)} is not O or B-/I-TYPE")
    return tag


def _read_jsonl(path: str) -> list[Sentence]:
    sentences = []
    for number, line in enumerate(file_lines(path), start=1):
        where = f"{path} line {number}"
        record = parse_json(line, where)
        if not isinstance(record, dict) or not isinstance(record.get("tokens"), list):
            raise UserError(f"{where}: expected an object with a 'tokens' list")
        tags = record.get("tags", record.get("ner_tags"))
        if not isinstance(tags, list):
            raise UserError(f"{where}: expected a 'tags' (or 'ner_tags') list")
        words = record["tokens"]
        if not all(isinstance(w, str) and w.strip() for w in words) or not words:
            raise UserError(f"{where}: 'tokens' must be a non-empty list of non-empty strings")
        if len(words) != len(tags):
            raise UserError(f"{where}: {len(words)} tokens but {len(tags)} tags")
        tags = [_check_tag(t, where) if isinstance(t, str) else _check_tag(json.dumps(t), where) for t in tags]
        if any(lone_surrogate(t) for t in [*words, *tags]):  # only JSON escapes make one
            raise UserError(f"{where}: a token or tag holds a lone surrogate escape (not Unicode text)")
        sentences.append(Sentence(words, tags, number, path))
    return sentences


def read_conll(path: str) -> list[Sentence]:
    """Reads a CoNLL-style column file (or JSON lines of tokens and tags).

    Args:
        path: the file (``.jsonl`` / ``.json``: JSON lines; anything else: columns).

    Raises:
        UserError: a missing, unreadable or empty file, a sentence line with one column, a bad
            tag, tokens and tags differing in number; naming the file and line.
    """
    if path.lower().endswith((".jsonl", ".json")):
        sentences = _read_jsonl(path)
    else:
        sentences, first = [], 0
        words: list[str] = []
        tags: list[str] = []

        def flush() -> None:
            if words:
                sentences.append(Sentence(list(words), list(tags), first, path))
                words.clear()
                tags.clear()

        for number, line in enumerate(file_lines(path), start=1):
            line = line.strip()
            if not line:
                flush()
                continue
            fields = [f.strip() for f in line.split("\t")] if "\t" in line else line.split()
            if fields[0] == "-DOCSTART-":
                flush()
                continue
            if len(fields) < 2:
                raise UserError(f"{path} line {number}: expected a token and a tag, got 1 column")
            if not words:
                first = number
            words.append(fields[0])
            tags.append(_check_tag(fields[-1], f"{path} line {number}"))
        flush()
    if not sentences:
        raise UserError(f"{path}: empty file (no sentences)")
    return sentences


def tag_set(sentences: Iterable[Sentence]) -> tuple[str, ...]:
    """The tags used, ``O`` first, then by entity type and B, I, E, S."""
    tags = {t for s in sentences for t in s.tags or ()}
    rest = sorted(tags - {"O"}, key=lambda t: (t[2:], _PREFIX_ORDER[t[0]]))
    return ("O", *rest)


def check_tags(sentences: Iterable[Sentence], labels: Sequence[str], seen_in: str = "") -> None:
    """Raises UserError, naming file and line, at the first tag not in ``labels``."""
    allowed = set(labels)
    for s in sentences:
        for i, tag in enumerate(s.tags or ()):
            if tag not in allowed:
                line = s.line + i if not s.source.lower().endswith((".jsonl", ".json")) else s.line
                origin = f"does not occur in {seen_in}" if seen_in else "is not a tag of this task"
                raise UserError(f"{s.source} line {line}: tag {shown_repr(tag)} {origin} "
                                f"(tags: {', '.join(map(shown, labels))})")


# --------------------------------------------------------------------------------------------
# Encoding and sub-word alignment


@dataclass
class TaggingFeatures(Features):
    """``Features`` of sentences, with the word behind each token.

    Attributes:
        word_ids: N arrays (T_i,): the word index of each token, -1 for specials.
        num_words: (N,) the number of words of each sentence (kept or cut off).
    """

    word_ids: list[np.ndarray] | None = None
    num_words: np.ndarray | None = None

    def first_subwords(self, i: int) -> np.ndarray:
        """Token positions of sequence ``i`` that start a word (those that carry the word's label)."""
        if self.word_ids is None:
            raise TypeError("TaggingFeatures without word_ids (not made by encode_tagging)")
        w = self.word_ids[i]
        starts = (w >= 0) & np.concatenate([[True], w[1:] != w[:-1]])
        return np.flatnonzero(starts)


def encode_tagging(sentences: Sequence[Sentence], tokenizer: Tokenizer, max_length: int = 128,
                   label_map: Mapping[str, int] | None = None) -> TaggingFeatures:
    """Tokenizes pre-split words; labels each word's first sub-word, ``IGNORE_INDEX`` elsewhere.

    Args:
        sentences: the sentences (with tags, or all without).
        tokenizer: the model's tokenizer (not modified).
        max_length: the longest sequence, specials included; later words are cut off.
        label_map: tag → id; needed when the sentences are tagged.

    Returns:
        ``TaggingFeatures``; ``labels`` is a list of (T_i,) int64 arrays, or None when untagged.

    Raises:
        UserError: a tag missing from ``label_map``, naming its file and line.
    """
    tok = prepared_tokenizer(tokenizer, max_length)
    encodings = tok.encode_batch([s.words for s in sentences], is_pretokenized=True)
    tagged = bool(sentences) and all(s.tags is not None for s in sentences)
    if tagged:
        if label_map is None:
            raise ValueError("tagged sentences need a label_map")
        check_tags(sentences, list(label_map), "the model's tags")
    input_ids, type_ids, word_ids, labels = [], [], [], []
    for s, enc in zip(sentences, encodings):
        input_ids.append(np.array(enc.ids, dtype=np.int64))
        type_ids.append(np.array(enc.type_ids, dtype=np.int64))
        w = np.array([-1 if i is None else i for i in enc.word_ids], dtype=np.int64)
        word_ids.append(w)
        if tagged:
            assert label_map is not None and s.tags is not None  # tagged: all sentences have tags, checked above
            y = np.full(len(w), IGNORE_INDEX, dtype=np.int64)
            starts = (w >= 0) & np.concatenate([[True], w[1:] != w[:-1]])
            y[starts] = [label_map[s.tags[j]] for j in w[starts]]
            labels.append(y)
    num_words = np.array([len(s.words) for s in sentences], dtype=np.int64)
    return TaggingFeatures(input_ids, type_ids, labels if tagged else None, word_ids=word_ids, num_words=num_words)


def word_tags(features: TaggingFeatures, predictions: Sequence[Sequence[int]] | np.ndarray,
              labels: Sequence[str], fill: str = "O") -> list[list[str]]:
    """Per-token predicted ids → one tag per word (read at each word's first sub-word).

    Args:
        features: what was encoded.
        predictions: for each sequence, the predicted tag id per token ((N, T) padded or ragged).
        labels: tag names by id.
        fill: the tag of words with no sub-word inside ``max_length``.

    Returns:
        One list of ``num_words[i]`` tags per sentence.
    """
    out = []
    for i in range(len(features)):
        if features.num_words is None or features.word_ids is None:
            raise TypeError("TaggingFeatures without num_words or word_ids (not made by encode_tagging)")
        tags = [fill] * int(features.num_words[i])
        starts = features.first_subwords(i)
        pred = np.asarray(predictions[i])
        for pos, word in zip(starts, features.word_ids[i][starts]):
            tags[word] = labels[int(pred[pos])]
        out.append(tags)
    return out


# --------------------------------------------------------------------------------------------
# Entities of raw text

_LEADING = frozenset("([{\"'«“‘")
_TRAILING = frozenset(")]}\"'»”’.,;:!?")


def split_words(text: str) -> list[tuple[str, int, int]]:
    """Splits raw text into CoNLL-like words with their character offsets.

    Whitespace separates words; leading brackets and quotes and trailing punctuation are words
    of their own (a final "." stays when the word has another one: "U.S."), and so is a final
    "'s" ("Germany 's"), as in the CoNLL-2003 tokenization.

    Returns:
        ``[(word, start, end)]``, ``text[start:end] == word``.
    """
    words: list[tuple[str, int, int]] = []
    for m in re.finditer(r"\S+", text):
        s, e = m.span()
        lead, trail = [], []
        while e - s > 1 and text[s] in _LEADING:
            lead.append((s, s + 1))
            s += 1
        while e - s > 1 and text[e - 1] in _TRAILING:
            if text[e - 1] == "." and "." in text[s:e - 1]:
                break
            trail.append((e - 1, e))
            e -= 1
        if e - s > 2 and text[e - 2:e].lower() in ("'s", "’s"):
            trail.append((e - 2, e))
            e -= 2
        words.extend((text[a:b], a, b) for a, b in [*lead, (s, e), *reversed(trail)])
    return words


def char_entities(text: str, words: Sequence[tuple[str, int, int]], tags: Sequence[str],
                  scores: Sequence[float] | None = None) -> list[dict]:
    """Entities of word-level tags as character spans of the original text.

    Args:
        text: the raw text.
        words: ``split_words(text)`` (or any words with offsets into ``text``).
        tags: one predicted tag per word.
        scores: optional per-word confidences; an entity gets the mean of its words'.

    Returns:
        ``[{"type", "start", "end", "text"(, "score")}]`` with ``text == text[start:end]``.
    """
    if len(words) != len(tags):
        raise ValueError(f"{len(words)} words but {len(tags)} tags")
    out = []
    for type_, first, last in get_entities(list(tags)):
        start, end = words[first][1], words[last][2]
        entity = {"type": type_, "start": start, "end": end, "text": text[start:end]}
        if scores is not None:
            entity["score"] = float(np.mean(scores[first:last + 1]))
        out.append(entity)
    return out


class Tagging(Family):
    """One tag per word (NER): per-token logits, read at each word's first piece."""

    name = "tagging"
    per_token = True

    def score(self, task, raw: Raw, examples: list, features, labels: Sequence[str]):
        tags = word_tags(features, [np.argmax(x, -1) for x in raw["logits"]], labels)
        return task.metrics([s.tags for s in examples], tags), [{"words": s.words, "tags": t}
                                                                for s, t in zip(examples, tags)]

    def predict(self, task, records, tokenizer, labels, run: Run):
        field = task.text_fields[0]
        words = [split_words(r[field]) for r in records]
        sentences = [Sentence([w for w, _, _ in ws] or [""], ["O"] * max(1, len(ws)), i, "input")
                     for i, ws in enumerate(words)]
        features = task.encode(sentences, tokenizer, labels)
        tags = word_tags(features, [np.argmax(x, -1) for x in run(features)["logits"]], labels)
        for r, ws, t in zip(records, words, tags):
            yield {"entities": char_entities(r[field], ws, t[:len(ws)]) if ws else []}

    def hf_fields(self, labels):
        return {"id2label": {i: str(lab) for i, lab in enumerate(labels)},
                "label2id": {str(lab): i for i, lab in enumerate(labels)}}

    def hf_record(self, labels, max_positions):
        return record_defaults(self, "token-classification", ["text"], labels, min(512, max_positions))


TAGGING = Tagging()
