"""Vocabulary extension for continued pre-training: ``electrolite tokenizer extend``.

A released WordPiece vocabulary splits a domain's words into many pieces ("electroencephalography" into
six), which costs sequence length and leaves the model to compose the word's meaning from fragments. We add
the N words with the largest saving, count × (pieces − 1), as whole-word entries appended after the base
vocabulary, so every base id keeps its meaning. A run started with ``pretrain --init CHECKPOINT`` on a
corpus prepared with the extended tokenizer grows the checkpoint's embedding matrix: each new row starts
as the mean of its word's pieces' rows (and the MLM head's bias likewise), as e.g. exBERT and the
vocabulary-adaptation literature initialise new entries.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch
from tokenizers import Tokenizer

from electrolite.data.corpus import iter_documents
from electrolite.data.tokenizer import load_tokenizer, save_tokenizer, tokenizer_fingerprint
from electrolite.errors import UserError


def _wordpiece_vocab(tok: Tokenizer, where: str) -> dict[str, int]:
    spec = json.loads(tok.to_str())
    if spec["model"]["type"] != "WordPiece":
        raise UserError(f"{where}: tokenizer extend supports WordPiece vocabularies (BERT, ELECTRA); this one is "
                        f"{spec['model']['type']}")
    return dict(spec["model"]["vocab"])


def _unpadded(tok: Tokenizer) -> Tokenizer:
    """A copy that neither pads nor truncates (a checkpoint's tokenizer.json may pad every text to 128)."""
    copy = Tokenizer.from_str(tok.to_str())
    copy.no_padding()
    copy.no_truncation()
    return copy


def candidate_words(tok: Tokenizer, files: list[str], errors: str = "strict") -> Counter:
    """Word counts of `files`, words as the tokenizer's normalizer and pre-tokenizer cut them."""
    counts: Counter = Counter()
    for path in files:
        for doc in iter_documents(path, errors):
            text = tok.normalizer.normalize_str(doc) if tok.normalizer else doc
            counts.update(w for w, _ in tok.pre_tokenizer.pre_tokenize_str(text))
    return counts


def extend_tokenizer(tokenizer: str, files: list[str], add: int, min_count: int = 5,
                     errors: str = "strict") -> tuple[Tokenizer, list[dict]]:
    """The tokenizer with up to `add` whole words appended, and what was added.

    Args:
        tokenizer: a tokenizer.json, vocab.txt or a directory holding one (a checkpoint dir).
        files: the domain corpus (.txt, .txt.gz, .jsonl).
        add: how many words to add (fewer when fewer words qualify).
        min_count: a word must occur this often.

    Returns:
        (extended tokenizer, [{"word", "id", "count", "pieces"}] in id order).
    """
    if add < 1:
        raise UserError(f"tokenizer extend --add must be at least 1, got {add}")
    base = _unpadded(load_tokenizer(tokenizer))
    vocab = _wordpiece_vocab(base, tokenizer)
    scored = []
    for word, count in candidate_words(base, files, errors).items():
        if count < min_count or word in vocab or not any(c.isalpha() for c in word):
            continue
        pieces = base.encode(word, add_special_tokens=False).ids
        if len(pieces) > 1:
            scored.append((count * (len(pieces) - 1), word, count, pieces))
    scored.sort(key=lambda s: (-s[0], s[1]))
    if not scored:
        raise UserError(f"tokenizer extend: no word of {', '.join(files)} occurs {min_count}+ times and is split "
                        "into several pieces; nothing to add")
    added, new_vocab = [], dict(vocab)
    next_id = max(vocab.values()) + 1
    for _, word, count, pieces in scored[:add]:
        new_vocab[word] = next_id
        added.append({"word": word, "id": next_id, "count": count, "pieces": pieces})
        next_id += 1
    spec = json.loads(base.to_str())
    spec["model"]["vocab"] = new_vocab
    return Tokenizer.from_str(json.dumps(spec)), added


def write_extension(tok: Tokenizer, added: list[dict], base: str, out: str) -> None:
    """OUT/tokenizer.json (and vocab.txt) plus OUT/extension.json: the base, its fingerprint, the added words."""
    save_tokenizer(tok, out)
    record = {"base": base, "base_fingerprint": tokenizer_fingerprint(load_tokenizer(base)),
              "base_vocab_size": added[0]["id"], "added": added}
    (Path(out) / "extension.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n",
                                             encoding="utf-8")


def added_pieces(base: Tokenizer, extended: Tokenizer) -> dict[int, list[int]] | None:
    """{new id: the base ids of its word's pieces} when `extended` is `base` with whole words appended
    (same normalizer, pre-tokenizer and every base entry at its id); None when it is not such an extension."""
    a, b = json.loads(base.to_str()), json.loads(extended.to_str())
    if a["model"].get("type") != "WordPiece" or b["model"].get("type") != "WordPiece":
        return None
    va, vb = a["model"]["vocab"], b["model"]["vocab"]
    same_rest = all(a.get(k) == b.get(k) for k in ("normalizer", "pre_tokenizer", "post_processor", "added_tokens"))
    if not same_rest or len(vb) <= len(va) or any(vb.get(t) != i for t, i in va.items()):
        return None
    plain = _unpadded(base)
    return {i: plain.encode(t, add_special_tokens=False).ids for t, i in vb.items() if t not in va}


def grow_rows(table: torch.Tensor, pieces: dict[int, list[int]], rows: int) -> torch.Tensor:
    """`table` (V, ...) grown to `rows`: new row i is the mean of its pieces' rows (zero where it has none)."""
    grown = torch.zeros((rows, *table.shape[1:]), dtype=table.dtype)
    grown[:table.shape[0]] = table
    for i, ids in pieces.items():
        if ids:
            grown[i] = table[ids].mean(0)
    return grown
