"""Pre-training corpus: text files → documents → sentences → packed two-segment examples → shards.

``prepare`` turns .txt / .txt.gz / .jsonl files into a corpus directory::

    meta.json               format version, seq_len, vocab size, special-token ids, tokenizer
                            fingerprint, per-split counts and shard list, sources, seed, options
    tokenizer.json          the tokenizer the ids were made with
    train-00000.safetensors input_ids (N, seq_len) uint16 (int32 if vocab > 65535),
    valid-00000.safetensors segment_lengths (N, 2) int32 = (len A, len B), specials excluded

An example is ``[CLS] A [SEP] B [SEP]`` or ``[CLS] A [SEP]``, padded at the end with [PAD].
Examples are built exactly like ELECTRA's ``build_pretraining_dataset.py`` (a "line" there is
a sentence here). Reading a corpus is dataset.py's job (``PretrainingCorpus``, ``EpochSampler``).

Hold-out rule: document ``i`` (counted over all files in order) goes to ``valid`` when
``hash(seed, i) < valid_fraction``. So that tiny corpora still get a usable valid split, every
4th document (``i % 4 == 3``) also goes to ``valid`` while ``valid`` has fewer than 8 examples
(the one being filled counts). ``valid_fraction=0`` switches the valid split off.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import asdict
from itertools import chain

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from electrolite.data.dataset import FORMAT, FORMAT_VERSION, EpochSampler, PretrainingCorpus  # reading; re-exported
from electrolite.data.textfiles import (
    builtin_corpus_text,
    iter_documents,
    prefetch,
    read_sentence_blocks,
    split_sentences,
    write_builtin_corpus,
)
from electrolite.data.tokenizer import (
    SpecialTokens,
    load_tokenizer,
    special_tokens,
    tokenizer_fingerprint,
)
from electrolite.errors import UserError

__all__ = [  # the readers are re-exported: callers look for them here
    "EpochSampler", "PretrainingCorpus", "builtin_corpus_text", "format_summary", "iter_documents", "prepare",
    "split_sentences", "write_builtin_corpus",
]

_MIN_VALID_EXAMPLES = 8  # see the hold-out rule

# ---------------------------------------------------------------------------------------------
# Building examples
# ---------------------------------------------------------------------------------------------


class _ShardWriter:
    """Collects finished examples of one split and writes them in shards of ``shard_size``."""

    def __init__(self, out_dir: str, split: str, seq_len: int, dtype, shard_size: int, special: SpecialTokens):
        self.out_dir, self.split, self.seq_len, self.dtype = out_dir, split, seq_len, dtype
        self.shard_size, self.special = shard_size, special
        self.rows: list[np.ndarray] = []  # (1024, seq_len) blocks: memory follows the examples, not shard_size
        self.segs: list[tuple[int, int]] = []
        self.shards: list[dict] = []
        self.examples = self.tokens = self.single = 0

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        n = len(self.segs) % 1024
        if n == 0:
            self.rows.append(np.full((1024, self.seq_len), self.special.pad_token_id, self.dtype))
        row, la, lb = self.rows[-1][n], len(a), len(b)
        row[0] = self.special.cls_token_id
        row[1 : 1 + la] = a
        row[1 + la] = self.special.sep_token_id
        if lb:
            row[2 + la : 2 + la + lb] = b
            row[2 + la + lb] = self.special.sep_token_id
        self.segs.append((la, lb))
        self.examples += 1
        self.tokens += la + lb + 2 + (lb > 0)
        self.single += lb == 0
        if len(self.segs) == self.shard_size:
            self.flush()

    def flush(self) -> None:
        n = len(self.segs)
        if n == 0:
            return
        name = f"{self.split}-{len(self.shards):05d}.safetensors"
        tensors = {
            "input_ids": np.concatenate(self.rows)[:n],  # (n, seq_len)
            "segment_lengths": np.asarray(self.segs, dtype=np.int32).reshape(n, 2),
        }
        save_file(tensors, os.path.join(self.out_dir, name), metadata={"format": FORMAT})
        self.shards.append({"file": name, "examples": n})
        self.rows, self.segs = [], []

    def summary(self) -> dict:
        total = self.examples * self.seq_len
        return {
            "examples": self.examples,
            "tokens": self.tokens,  # non-padding positions, [CLS]/[SEP] included
            "padding_fraction": round(1 - self.tokens / total, 6) if total else 0.0,
            "single_segment_fraction": round(self.single / self.examples, 6) if self.examples else 0.0,
            "shards": self.shards,
        }


class _ExampleBuilder:
    """ELECTRA's ``ExampleBuilder`` over arrays of token ids (one array per sentence)."""

    def __init__(self, writer: _ShardWriter, rng: random.Random, max_length: int,
                 single_segment_prob: float, short_seq_prob: float, pack_documents: bool):
        self.writer, self.rng, self.max_length = writer, rng, max_length
        self.single_segment_prob, self.short_seq_prob = single_segment_prob, short_seq_prob
        self.pack_documents = pack_documents
        self.target_length = max_length
        self.sentences: list[np.ndarray] = []
        self.length = 0
        self.documents = self.text_tokens = self.dropped_tokens = 0

    def add_sentence(self, ids: np.ndarray) -> None:
        self.sentences.append(ids)
        self.length += len(ids)
        if self.length >= self.target_length:
            self.create_example()

    def end_document(self) -> None:
        self.documents += 1
        if not self.pack_documents and self.length:
            self.create_example()

    def create_example(self) -> None:
        rand = self.rng.random
        # Small chance of a single segment, as in classification tasks.
        if rand() < self.single_segment_prob:
            first_target = 100000
        else:
            first_target = (self.target_length - 3) // 2  # -3: [CLS] and two [SEP] to come
        first: list[np.ndarray] = []
        second: list[np.ndarray] = []
        n_first = n_second = 0
        for sentence in self.sentences:
            # To the first segment if it is empty, if the sentence still fits, or 50% of the
            # time when it overflows (ELECTRA's rule), but never once the second segment has
            # begun: ELECTRA lets a later short sentence jump back into A, which scrambles the
            # order that sentence-order prediction has to learn.
            if n_first == 0 or (n_second == 0 and (n_first + len(sentence) < first_target
                                                  or (n_first < first_target and rand() < 0.5))):
                first.append(sentence)
                n_first += len(sentence)
            else:
                second.append(sentence)
                n_second += len(sentence)
        a = np.concatenate(first)[: self.max_length - 2]  # trim, leaving room for [CLS] [SEP]
        b = np.concatenate(second)[: max(0, self.max_length - len(a) - 3)] if second else a[:0]
        self.text_tokens += self.length
        self.dropped_tokens += self.length - len(a) - len(b)
        self.sentences, self.length = [], 0
        # Small chance of a random-length example instead of a full one.
        if rand() < self.short_seq_prob:
            self.target_length = self.rng.randint(5, self.max_length)
        else:
            self.target_length = self.max_length
        self.writer.add(a, b)

    def finish(self) -> None:
        if self.length:
            self.create_example()
        self.writer.flush()


def _unit_hash(seed: int, index: np.ndarray) -> np.ndarray:
    """A deterministic float in [0, 1) per (seed, index): splitmix64, vectorised."""
    with np.errstate(over="ignore"):
        z = index.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15 + 0x9E3779B97F4A7C15) % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / 2.0**53


# ---------------------------------------------------------------------------------------------
# prepare
# ---------------------------------------------------------------------------------------------


def _encode(tok: Tokenizer, sentences: list[str], counts: list[int], dtype):
    """Token ids of a block: flat (T,) ids, (S,) sentence lengths, and the per-document counts."""
    encodings = getattr(tok, "encode_batch_fast", tok.encode_batch)(sentences, add_special_tokens=False)
    ids = [e.ids for e in encodings]
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(chain.from_iterable(ids), dtype=dtype, count=int(lengths.sum()))
    return flat, lengths, counts


class _Router:
    """Sends each tokenized document to the train or the valid builder (the hold-out rule)."""

    def __init__(self, train: _ExampleBuilder, valid: _ExampleBuilder, seed: int, valid_fraction: float):
        self.train, self.valid, self.seed, self.valid_fraction = train, valid, seed, valid_fraction
        self.min_valid_examples = _MIN_VALID_EXAMPLES if valid_fraction > 0 else 0
        self.documents = self.sentences = 0

    def add(self, flat: np.ndarray, lengths: np.ndarray, counts: list[int]) -> None:
        ends = np.cumsum(lengths)
        starts, ends = (ends - lengths).tolist(), ends.tolist()  # Python ints: cheap to slice with
        index = np.arange(self.documents, self.documents + len(counts))
        held_out = (_unit_hash(self.seed, index) < self.valid_fraction).tolist()
        s = 0
        for held, n in zip(held_out, counts, strict=True):
            valid_examples = self.valid.writer.examples + (self.valid.length > 0)
            if held or (valid_examples < self.min_valid_examples and self.documents % 4 == 3):
                builder = self.valid
            else:
                builder = self.train
            for k in range(s, s + n):
                if ends[k] > starts[k]:  # a sentence the normalizer removed entirely has no ids
                    builder.add_sentence(flat[starts[k] : ends[k]])
            builder.end_document()
            s += n
            self.documents += 1
        self.sentences += len(lengths)


def _ids_tokenizer(tokenizer: str | Tokenizer) -> tuple[Tokenizer, SpecialTokens]:
    """A copy of the tokenizer that gives ids only (no padding or truncation), and its special tokens.

    Raises:
        UserError: an unreadable tokenizer file, or one without the special tokens (naming the file).
    """
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(os.fspath(tokenizer))
    tok = Tokenizer.from_str(tok.to_str())  # a copy we may change
    tok.no_padding()
    tok.no_truncation()
    try:
        return tok, special_tokens(tok)
    except UserError as e:
        if isinstance(tokenizer, Tokenizer):
            raise
        raise UserError(f"{os.fspath(tokenizer)}: {e}") from None


def prepare(files: list[str], tokenizer: str | Tokenizer, seq_len: int, out_dir: str, *, seed: int = 0,
            valid_fraction: float = 0.01, pack_documents: bool = False, short_seq_prob: float = 0.05,
            single_segment_prob: float = 0.1, shard_size: int = 65536, encoding_errors: str = "strict",
            workers: int | None = None, progress: bool = True, overwrite: bool = False) -> dict:
    """Tokenizes text files into a corpus directory of packed examples (see the module docstring).

    Args:
        files: .txt, .txt.gz or .jsonl files, read in this order.
        tokenizer: a tokenizer.json, a directory holding one (or a vocab.txt), or a ``Tokenizer``.
        seq_len: example length in tokens, [CLS]/[SEP] included (8 to 4096).
        out_dir: the corpus directory to create; written as ``out_dir.tmp-PID`` and renamed at the end.
        seed: seeds example building and the train/valid hold-out; same seed, same bytes.
        valid_fraction: the fraction of documents held out for validation (see the hold-out rule).
        pack_documents: let examples run across document boundaries (RoBERTa's FULL-SENTENCES),
            so that short documents fill sequences; segments may then span documents.
        short_seq_prob: chance that the next example aims at a random length in [5, seq_len].
        single_segment_prob: chance that an example has a single segment.
        shard_size: examples per shard file.
        encoding_errors: "strict" (invalid UTF-8 is an error) or "replace" (U+FFFD).
        workers: tokenizer threads (default: every core); the output does not depend on it.
        progress: show a progress bar and print a summary to stderr.
        overwrite: replace an existing non-empty ``out_dir`` instead of refusing.

    Returns:
        The corpus meta (also written to ``out_dir/meta.json``).
    """
    files = [os.fspath(f) for f in files]
    if not files:
        raise UserError("prepare: no input files")
    if not 8 <= seq_len <= 4096:
        raise UserError(f"seq_len must be between 8 and 4096, got {seq_len}")
    for name, p in (("valid_fraction", valid_fraction), ("short_seq_prob", short_seq_prob),
                    ("single_segment_prob", single_segment_prob)):
        if not 0.0 <= p <= 1.0 or (name == "valid_fraction" and p >= 1.0):
            raise UserError(f"{name} must be in [0, 1{')' if name == 'valid_fraction' else ']'}, got {p}")
    if shard_size < 1:
        raise UserError(f"shard_size must be positive, got {shard_size}")
    if workers is not None and workers < 1:
        raise UserError(f"workers must be at least 1, got {workers}")
    if encoding_errors not in ("strict", "replace"):
        raise UserError(f"encoding errors must be 'strict' or 'replace', got {encoding_errors!r}")
    for path in files:
        if not os.path.isfile(path):
            raise UserError(f"{path}: no such file")
    out_dir = os.path.normpath(os.fspath(out_dir))
    if os.path.exists(out_dir):
        if not os.path.isdir(out_dir):
            raise UserError(f"{out_dir} exists and is not a directory")
        if os.listdir(out_dir) and not overwrite:
            raise UserError(f"{out_dir} already exists and is not empty (use --overwrite to replace it)")
    tok, special = _ids_tokenizer(tokenizer)
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    dtype = np.uint16 if vocab_size <= 65535 else np.int32
    if workers is None:  # the cores this process may use (a container's, not the host's)
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    tmp = f"{out_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    start = time.perf_counter()
    bar = tqdm(total=sum(os.path.getsize(p) for p in files), unit="B", unit_scale=True,
               desc=f"prepare {os.path.basename(out_dir)}", disable=not progress)
    # Each worker thread encodes whole blocks single-threaded, so `workers` is the core count
    # used; tokenizers reads this variable on every call. Restored below.
    saved_env = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        rng = random.Random(seed)  # one stream for both splits: documents arrive in file order
        builders = {split: _ExampleBuilder(_ShardWriter(tmp, split, seq_len, dtype, shard_size, special), rng,
                                           seq_len, single_segment_prob, short_seq_prob, pack_documents)
                    for split in ("train", "valid")}
        train, valid = builders["train"], builders["valid"]
        router = _Router(train, valid, seed, valid_fraction)
        # Pipeline: a reader thread splits sentences, `workers` threads encode blocks (the GIL is
        # released in Rust), this thread builds examples from the blocks in their original order.
        blocks = prefetch(read_sentence_blocks(files, encoding_errors, bar.update), depth=2 * workers)
        with closing(blocks), ThreadPoolExecutor(workers, thread_name_prefix="electrolite-tokenize") as pool:
            pending: deque = deque()  # futures in submission order, so the output is deterministic
            for block in blocks:
                pending.append(pool.submit(_encode, tok, *block, dtype))
                if len(pending) > workers:
                    router.add(*pending.popleft().result())
            while pending:
                router.add(*pending.popleft().result())
        train.finish()
        valid.finish()
        if train.writer.examples == 0:
            raise UserError(f"{', '.join(files)}: too little text for a single training example")
        elapsed = time.perf_counter() - start
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "seq_len": seq_len,
            "vocab_size": vocab_size,
            "dtype": np.dtype(dtype).name,
            "special_tokens": asdict(special),
            "tokenizer_fingerprint": tokenizer_fingerprint(tok),
            "num_train": train.writer.examples,
            "num_valid": valid.writer.examples,
            "splits": {name: b.writer.summary() | {"documents": b.documents, "text_tokens": b.text_tokens,
                                                   "dropped_tokens": b.dropped_tokens}
                       for name, b in builders.items()},
            "documents": router.documents,
            "sentences": router.sentences,
            "sources": [{"path": p, "bytes": os.path.getsize(p)} for p in files],
            "seed": seed,
            "options": {"valid_fraction": valid_fraction, "min_valid_examples": router.min_valid_examples,
                        "pack_documents": pack_documents, "short_seq_prob": short_seq_prob,
                        "single_segment_prob": single_segment_prob, "shard_size": shard_size,
                        "encoding_errors": encoding_errors, "sentence_splitter": "regex-v1"},
            "stats": {"seconds": round(elapsed, 3)},
        }
        tok.save(os.path.join(tmp, "tokenizer.json"))
        with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)
            f.write("\n")
        if os.path.isdir(out_dir):  # empty, or overwrite=True: swap the old one out, then drop it
            old = f"{out_dir}.old-{os.getpid()}"
            os.rename(out_dir, old)
            os.rename(tmp, out_dir)
            shutil.rmtree(old)
        else:
            os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        bar.close()
        if saved_env is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = saved_env
    if progress:
        print(format_summary(meta, out_dir), file=sys.stderr)
    return meta


def format_summary(meta: dict, corpus_dir: str = "corpus") -> str:
    """A few human-readable lines about a prepared corpus.

    Args:
        meta: the dict ``prepare`` returns (or ``meta.json``).
        corpus_dir: the directory name to show.
    """
    seconds = meta["stats"]["seconds"]
    text_tokens = sum(s["text_tokens"] for s in meta["splits"].values())
    disk = sum(s["bytes"] for s in meta["sources"])
    lines = [f"{corpus_dir}: {meta['documents']:,} documents, {meta['sentences']:,} sentences, "
             f"{text_tokens:,} tokens from {disk / 1e6:.1f} MB on disk in {seconds:.1f} s "
             f"({text_tokens / max(seconds, 1e-9) / 1e6:.2f} M tokens/s), seq_len {meta['seq_len']}"]
    for name, s in meta["splits"].items():
        lines.append(f"  {name}: {s['examples']:,} examples in {len(s['shards'])} shard(s), "
                     f"padding {100 * s['padding_fraction']:.1f}%, "
                     f"single-segment {100 * s['single_segment_fraction']:.1f}%, "
                     f"{s['dropped_tokens']:,} tokens trimmed")
    return "\n".join(lines)
