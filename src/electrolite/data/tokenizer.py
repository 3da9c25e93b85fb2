"""Train, load and save tokenizers (Hugging Face ``tokenizers``).

Two kinds, both with ``[CLS] A [SEP] (B [SEP])`` post-processing and token type ids:

* ``wordpiece``: BERT/ELECTRA style. BertNormalizer (lowercase and strip accents, or neither),
  BertPreTokenizer, "##" continuation pieces; specials [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4.
* ``unigram``: SentencePiece/ALBERT style. NFKC (+ lowercase), Metaspace "▁" word starts;
  specials <pad>=0 <unk>=1 [CLS]=2 [SEP]=3 [MASK]=4.

``save_tokenizer`` writes ``tokenizer.json`` plus the two small files that let
``transformers.AutoTokenizer.from_pretrained(dir)`` load it with its special tokens set.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from electrolite.data.textfiles import iter_documents
from electrolite.errors import UserError

WORDPIECE_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
UNIGRAM_SPECIALS = ("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]")
# Names looked up, in order, for each special token (BERT, SentencePiece/ALBERT, RoBERTa).
_SPECIAL_NAMES = {
    "pad_token_id": ("[PAD]", "<pad>"),
    "unk_token_id": ("[UNK]", "<unk>"),
    "cls_token_id": ("[CLS]", "<cls>", "<s>"),
    "sep_token_id": ("[SEP]", "<sep>", "</s>"),
    "mask_token_id": ("[MASK]", "<mask>"),
}


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the special tokens every objective needs."""

    pad_token_id: int
    unk_token_id: int
    cls_token_id: int
    sep_token_id: int
    mask_token_id: int


def special_tokens(tok: Tokenizer) -> SpecialTokens:
    """Finds the special tokens of ``tok`` by their usual names ([PAD] or <pad>, [UNK] or <unk>, ...).

    Args:
        tok: the tokenizer.

    Raises:
        UserError: a special token is missing from the vocabulary.
    """
    ids = {}
    for field, names in _SPECIAL_NAMES.items():
        found = [i for i in map(tok.token_to_id, names) if i is not None]
        if not found:
            raise UserError(f"tokenizer has no {' or '.join(names[:2])} token ({field.removesuffix('_id')})")
        ids[field] = found[0]
    return SpecialTokens(**ids)


def _post_processor(cls: str, cls_id: int, sep: str, sep_id: int) -> processors.TemplateProcessing:
    return processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, cls_id), (sep, sep_id)],
    )


def _wordpiece(vocab: dict[str, int] | None, lowercase: bool) -> Tokenizer:
    model = models.WordPiece(vocab, unk_token="[UNK]") if vocab else models.WordPiece(unk_token="[UNK]")
    tok = Tokenizer(model)
    # strip_accents follows lowercase, as in BERT's uncased / cased models
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=lowercase, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def _text_batches(files: list[str], errors: str, size: int = 1000) -> Iterator[list[str]]:
    batch: list[str] = []
    for path in files:
        for doc in iter_documents(path, errors):
            batch.append(doc)
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch


def train_tokenizer(files: list[str], vocab_size: int, kind: str = "wordpiece", lowercase: bool = True,
                    min_frequency: int = 2, errors: str = "strict") -> Tokenizer:
    """Trains a tokenizer on text files, streaming them (they are never loaded whole).

    Training is not bit-reproducible upstream: pairs (WordPiece) of equal count are ordered by
    hash, so a few pieces at the vocabulary cut-off can differ between runs, and Unigram piece
    scores differ in the last digits. WordPiece ids are renumbered (specials, then by length and
    text) so that runs which agree on the pieces give the same tokenizer.json.

    Args:
        files: .txt, .txt.gz or .jsonl files (see ``electrolite.data.textfiles``).
        vocab_size: the vocabulary size, special tokens included.
        kind: ``"wordpiece"`` (BERT/ELECTRA) or ``"unigram"`` (SentencePiece, as in ALBERT).
        lowercase: lowercase the text (and, for WordPiece, strip accents).
        min_frequency: the minimum count of a merged pair (WordPiece only; Unigram has no such knob).
        errors: ``"strict"`` or ``"replace"`` for bytes that are not UTF-8.

    Raises:
        UserError: an unknown kind, a vocabulary too small, unreadable files.
    """
    if kind not in ("wordpiece", "unigram"):
        raise UserError(f"tokenizer kind must be 'wordpiece' or 'unigram', got {kind!r}")
    if vocab_size < 32:
        raise UserError(f"vocab_size must be at least 32, got {vocab_size}")
    files = [os.fspath(f) for f in files]
    if not files:
        raise UserError("tokenizer train: no input files")
    for path in files:
        if not os.path.isfile(path):
            raise UserError(f"{path}: no such file")
    trainer: trainers.Trainer
    if kind == "wordpiece":
        tok = _wordpiece(None, lowercase)
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=list(WORDPIECE_SPECIALS), limit_alphabet=1000,
                                            continuing_subword_prefix="##", show_progress=False)
        specials = WORDPIECE_SPECIALS
    else:
        tok = Tokenizer(models.Unigram())
        steps = [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
        tok.normalizer = normalizers.Sequence(steps + [normalizers.Lowercase()] if lowercase else steps)
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=list(UNIGRAM_SPECIALS),
                                          unk_token="<unk>", show_progress=False)
        specials = UNIGRAM_SPECIALS
    tok.train_from_iterator(_text_batches(files, errors), trainer=trainer)
    if kind == "wordpiece":
        # The trainer orders tied pieces by hash, so ids differ from run to run even when the
        # pieces agree. Renumber: specials, then by (length, continuation, text).
        vocab = tok.get_vocab(with_added_tokens=True)
        rest = sorted((t for t in vocab if t not in WORDPIECE_SPECIALS),
                      key=lambda t: (len(t.removeprefix("##")), t.startswith("##"), t))
        tok.model = models.WordPiece({t: i for i, t in enumerate([*WORDPIECE_SPECIALS, *rest])},
                                     unk_token="[UNK]", continuing_subword_prefix="##")
    for i, name in enumerate(specials):  # the trainers put them first, in order; objectives rely on it
        if tok.token_to_id(name) != i:
            raise RuntimeError(f"trainer placed {name} at {tok.token_to_id(name)}, expected {i}")
    tok.post_processor = _post_processor("[CLS]", 2, "[SEP]", 3)
    return tok


def _atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_tokenizer(tok: Tokenizer, out_dir: str, model_max_length: int | None = None) -> str:
    """Writes ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``.

    Each file is written atomically (a temporary file, then a rename). Padding and truncation are
    switched off in the saved tokenizer. ``transformers.AutoTokenizer.from_pretrained(out_dir)``
    loads the result as a ``PreTrainedTokenizerFast`` with cls/sep/pad/mask/unk tokens set.

    Args:
        tok: the tokenizer.
        out_dir: the directory (created if missing).
        model_max_length: recorded for ``transformers`` when given (e.g. the corpus seq_len).

    Returns:
        The path of ``tokenizer.json``.
    """
    tok = Tokenizer.from_str(tok.to_str())  # a copy: the caller's padding settings stay theirs
    tok.no_padding()
    tok.no_truncation()
    special = special_tokens(tok)
    names = {field.removesuffix("_id"): tok.id_to_token(i) for field, i in vars(special).items()}
    config: dict[str, object] = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
                                 "model_input_names": ["input_ids", "token_type_ids", "attention_mask"], **names}
    if model_max_length is not None:
        config["model_max_length"] = model_max_length
    try:
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, "tokenizer.json")
        _atomic_write(path, tok.to_str(pretty=True))
        _atomic_write(os.path.join(out_dir, "tokenizer_config.json"), json.dumps(config, indent=2) + "\n")
        _atomic_write(os.path.join(out_dir, "special_tokens_map.json"), json.dumps(names, indent=2) + "\n")
    except OSError as e:
        raise UserError(f"{out_dir}: cannot write the tokenizer ({e.strerror or e})") from None
    return path


def _from_vocab_txt(path: str, lowercase: bool) -> Tokenizer:
    """A BERT WordPiece tokenizer from a vocab.txt (one token per line, the line number is its id)."""
    try:
        with open(path, encoding="utf-8") as f:
            tokens = [line.rstrip("\r\n") for line in f]
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    while tokens and not tokens[-1]:
        tokens.pop()
    vocab = {t: i for i, t in enumerate(tokens)}
    if "[UNK]" not in vocab:
        raise UserError(f"{path}: not a BERT vocab.txt (no [UNK] token)")
    tok = _wordpiece(vocab, lowercase)
    tok.add_special_tokens([t for t in WORDPIECE_SPECIALS if t in vocab])  # never split, never lowercased
    if "[CLS]" in vocab and "[SEP]" in vocab:
        tok.post_processor = _post_processor("[CLS]", vocab["[CLS]"], "[SEP]", vocab["[SEP]"])
    return tok


_PROBE = "Probe, naïve 日本語 😀 \U0010fffd"  # words and characters no vocabulary has whole: the unknown token


def load_tokenizer(path: str, lowercase: bool | None = None) -> Tokenizer:
    """Loads a tokenizer.json, a BERT vocab.txt, or a directory holding either.

    Args:
        path: a ``tokenizer.json`` file, a ``vocab.txt`` file, or a directory with one of them
            (tokenizer.json preferred).
        lowercase: for a vocab.txt only: lowercase the input. Default: the directory's
            tokenizer_config.json ``do_lower_case`` if there is one, else True (BERT uncased).

    Raises:
        UserError: the path is missing or holds no readable tokenizer.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        for name in ("tokenizer.json", "vocab.txt"):
            if os.path.isfile(os.path.join(path, name)):
                if lowercase is None and name == "vocab.txt":
                    lowercase = _config_lowercase(path)
                return load_tokenizer(os.path.join(path, name), lowercase)
        raise UserError(f"{path}: no tokenizer.json or vocab.txt in this directory")
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such tokenizer file or directory")
    if not path.endswith(".json"):
        return _from_vocab_txt(path, True if lowercase is None else lowercase)
    try:
        tok = Tokenizer.from_file(path)
    except Exception as e:  # tokenizers raises a bare Exception for malformed files
        raise UserError(f"{path}: not a valid tokenizer.json ({_first_line(e)})") from None
    undefined = _template_gaps(json.loads(tok.post_processor.__getstate__())) if tok.post_processor else []
    if undefined:  # encoding would panic in Rust, which also prints a backtrace
        raise UserError(f"{path}: not a valid tokenizer.json (the post-processor's template uses "
                        f"{', '.join(map(repr, undefined))} but does not define it)")
    try:
        tok.encode(_PROBE)  # e.g. a model whose unknown token is missing fails here, not halfway through a corpus
    except Exception as e:
        raise UserError(f"{path}: not a valid tokenizer.json ({_first_line(e)})") from None
    except BaseException as e:  # pyo3's PanicException is a BaseException
        if type(e).__name__ != "PanicException":
            raise
        raise UserError(f"{path}: not a valid tokenizer.json (encoding failed: {_first_line(e)})") from None
    return tok


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _template_gaps(state: dict) -> list[str]:
    """Special tokens a post-processor's template (TemplateProcessing, maybe in a Sequence) uses but does not define."""
    if state.get("type") == "Sequence":
        return [gap for p in state.get("processors", []) for gap in _template_gaps(p)]
    if state.get("type") != "TemplateProcessing":
        return []
    used = {piece["SpecialToken"]["id"] for key in ("single", "pair") for piece in state.get(key, [])
            if "SpecialToken" in piece}
    return sorted(used - set(state.get("special_tokens", {})))


def _config_lowercase(directory: str) -> bool:
    try:
        with open(os.path.join(directory, "tokenizer_config.json"), encoding="utf-8") as f:
            return bool(json.load(f).get("do_lower_case", True))
    except (OSError, ValueError, AttributeError):
        return True


def word_start_mask(tok: Tokenizer) -> np.ndarray:
    """(vocab_size,) bool: True where a token begins a word; for whole-word masking.

    WordPiece: tokens not starting with the continuation prefix ("##"). Metaspace (Unigram,
    SentencePiece): tokens starting with "▁". Byte-level BPE: tokens starting with "Ġ".
    Special and added tokens count as word starts.

    Args:
        tok: the tokenizer.

    Raises:
        UserError: a tokenizer whose word boundaries this does not know.
    """
    spec = json.loads(tok.to_str())
    vocab = tok.get_vocab(with_added_tokens=True)
    mask = np.ones(tok.get_vocab_size(with_added_tokens=True), dtype=bool)
    if isinstance(tok.model, models.WordPiece):
        prefix = tok.model.continuing_subword_prefix
        for token, i in vocab.items():
            mask[i] = not token.startswith(prefix)
    else:
        text = json.dumps([spec.get("pre_tokenizer"), spec.get("decoder")])
        if '"Metaspace"' in text:
            marker = "▁"
            for part in (spec.get("pre_tokenizer") or {}, spec.get("decoder") or {}):
                marker = part.get("replacement", marker) if part.get("type") == "Metaspace" else marker
        elif '"ByteLevel"' in text:
            marker = "Ġ"
        else:
            raise UserError("whole-word masking needs a WordPiece, Metaspace or byte-level tokenizer")
        for token, i in vocab.items():
            mask[i] = token.startswith(marker)
    for added in spec.get("added_tokens", []):
        mask[added["id"]] = True
    return mask


def tokenizer_fingerprint(tok: Tokenizer) -> str:
    """sha256 of the tokenizer's canonical JSON (keys sorted, padding and truncation left out).

    Two tokenizers with the same fingerprint map every text to the same ids, however their
    tokenizer.json files were formatted.

    Args:
        tok: the tokenizer.
    """
    spec = json.loads(tok.to_str())
    spec["padding"] = spec["truncation"] = None
    canonical = json.dumps(spec, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
