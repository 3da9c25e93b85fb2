"""Tokenizer training, saving (transformers-compatible), loading, word starts and fingerprints."""

import gzip
import json
import os

import numpy as np
import pytest
from tokenizers import Tokenizer

from electrolite.data.textfiles import iter_documents
from electrolite.data.tokenizer import (
    SpecialTokens,
    load_tokenizer,
    save_tokenizer,
    special_tokens,
    tokenizer_fingerprint,
    train_tokenizer,
    word_start_mask,
)
from electrolite.errors import UserError

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "quick", "brown", "##ish", "fox", "jump",
         "##s", ".", ",", "un", "##believ", "##able"]


@pytest.fixture(scope="module")
def sample(shared_data, tmp_path_factory):
    """The first 2000 documents of the Gutenberg valid split, as .txt."""
    docs = []
    for doc in iter_documents(str(shared_data / "gutenberg-en" / "valid.txt.gz")):
        docs.append(doc)
        if len(docs) == 2000:
            break
    path = tmp_path_factory.mktemp("tok") / "sample.txt"
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path, docs


@pytest.fixture(scope="module")
def wordpiece(sample):
    return train_tokenizer([str(sample[0])], 1500)


@pytest.fixture(scope="module")
def unigram(sample):
    return train_tokenizer([str(sample[0])], 1500, kind="unigram")


@pytest.fixture
def vocab_txt(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return path


def test_wordpiece_layout(wordpiece):
    assert [wordpiece.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert wordpiece.get_vocab_size() == 1500
    assert special_tokens(wordpiece) == SpecialTokens(0, 1, 2, 3, 4)
    enc = wordpiece.encode("The Café was closed.", "It rained")
    # lowercased, accents stripped, BERT pre-tokenized, [CLS] A [SEP] B [SEP] with type ids
    assert enc.tokens[0] == "[CLS]" and enc.tokens[-1] == "[SEP]" and enc.tokens.count("[SEP]") == 2
    sep = enc.tokens.index("[SEP]")
    assert "".join(t.removeprefix("##") for t in enc.tokens[1:sep]) == "thecafewasclosed."
    assert enc.type_ids == [0] * (sep + 1) + [1] * (len(enc.ids) - sep - 1)
    assert wordpiece.padding is None and wordpiece.truncation is None


def test_unigram_layout(unigram):
    assert [unigram.id_to_token(i) for i in range(5)] == ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]
    assert unigram.get_vocab_size() == 1500
    assert special_tokens(unigram) == SpecialTokens(0, 1, 2, 3, 4)
    enc = unigram.encode("The  Garden of SURVIVAL")
    assert enc.tokens[0] == "[CLS]" and enc.tokens[-1] == "[SEP]"
    assert "".join(enc.tokens[1:-1]) == "▁the▁garden▁of▁survival"  # NFKC, lowercase, one space
    assert unigram.decode(enc.ids) == "the garden of survival"


def test_training_reads_gz_and_jsonl_like_txt(sample, wordpiece, tmp_path):
    path, docs = sample
    gz = tmp_path / "sample.txt.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    jsonl = tmp_path / "sample.jsonl"
    jsonl.write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs)), encoding="utf-8")
    reference = set(wordpiece.get_vocab())
    for other in (gz, jsonl):
        assert list(iter_documents(str(other))) == docs
        tok = train_tokenizer([str(other)], 1500)
        # The trainer breaks ties between equally frequent pairs by hash order, so a few pieces
        # at the vocabulary cut-off can differ from run to run; everything else must agree.
        assert len(set(tok.get_vocab()) & reference) >= 1490
        assert [tok.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def test_wordpiece_ids_do_not_depend_on_hash_order(wordpiece):
    # Renumbered: specials, then by (length, continuation, text).
    vocab = sorted(wordpiece.get_vocab().items(), key=lambda kv: kv[1])[5:]
    keys = [(len(t.removeprefix("##")), t.startswith("##"), t) for t, _ in vocab]
    assert keys == sorted(keys) and [i for _, i in vocab] == list(range(5, 1500))


def test_save_loads_in_transformers_with_same_ids(wordpiece, unigram, tmp_path):
    transformers = pytest.importorskip("transformers")
    texts = ["It was a dark and stormy night; the rain fell in torrents.", "Naïve café — 42 déjà vu!"]
    for tok, names in ((wordpiece, ["[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"]),
                       (unigram, ["[CLS]", "[SEP]", "<pad>", "[MASK]", "<unk>"])):
        out = tmp_path / names[2].strip("[]<>") / "tok"
        save_tokenizer(tok, str(out), model_max_length=128)
        assert sorted(os.listdir(out)) == ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
        for hf in (transformers.PreTrainedTokenizerFast.from_pretrained(str(out)),
                   transformers.AutoTokenizer.from_pretrained(str(out))):
            assert [hf.cls_token, hf.sep_token, hf.pad_token, hf.mask_token, hf.unk_token] == names
            assert hf.model_max_length == 128
            for text in texts:
                assert hf(text)["input_ids"] == tok.encode(text).ids
            pair = hf(texts[0], texts[1])
            enc = tok.encode(texts[0], texts[1])
            assert pair["input_ids"] == enc.ids and pair["token_type_ids"] == enc.type_ids


def test_save_switches_padding_off_and_keeps_callers_tokenizer(wordpiece, tmp_path):
    padded = Tokenizer.from_str(wordpiece.to_str())
    padded.enable_padding(length=64)
    save_tokenizer(padded, str(tmp_path))
    assert padded.padding is not None  # the caller's object is untouched
    loaded = load_tokenizer(str(tmp_path))
    assert loaded.padding is None and len(loaded.encode("the end").ids) == 4


def test_load_tokenizer_paths(wordpiece, vocab_txt, tmp_path):
    save_tokenizer(wordpiece, str(tmp_path / "dir"))
    for path in (tmp_path / "dir", tmp_path / "dir" / "tokenizer.json"):
        assert load_tokenizer(str(path)).to_str() == load_tokenizer(str(tmp_path / "dir")).to_str()
    # a BERT vocab.txt, as a file or in a directory: lowercased WordPiece with the template
    for path in (vocab_txt, vocab_txt.parent):
        tok = load_tokenizer(str(path))
        enc = tok.encode("The quick BROWNISH fox jumps, unbelievable.")
        assert enc.tokens == ["[CLS]", "the", "quick", "brown", "##ish", "fox", "jump", "##s", ",", "un",
                              "##believ", "##able", ".", "[SEP]"]
        assert enc.ids == [2, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 12, 3]
        assert special_tokens(tok) == SpecialTokens(0, 1, 2, 3, 4)
    cased = load_tokenizer(str(vocab_txt), lowercase=False)
    assert cased.encode("The fox", add_special_tokens=False).ids == [1, 9]


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(UserError, match="nowhere/tok.json: no such"):
        load_tokenizer(str(tmp_path / "nowhere" / "tok.json"))
    with pytest.raises(UserError, match=f"{tmp_path}: no tokenizer.json or vocab.txt"):
        load_tokenizer(str(tmp_path))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="bad.json: not a valid tokenizer.json"):
        load_tokenizer(str(tmp_path / "bad.json"))
    (tmp_path / "vocab.txt").write_text("a\nb\n")
    with pytest.raises(UserError, match=r"vocab.txt: not a BERT vocab.txt \(no \[UNK\]"):
        load_tokenizer(str(tmp_path / "vocab.txt"))


def test_missing_special_token_is_named(vocab_txt, tmp_path):
    (tmp_path / "v2.txt").write_text("\n".join(t for t in VOCAB if t != "[MASK]"))
    with pytest.raises(UserError, match=r"no \[MASK\] or <mask> token"):
        special_tokens(load_tokenizer(str(tmp_path / "v2.txt")))


def test_word_start_mask_wordpiece(vocab_txt, wordpiece):
    mask = word_start_mask(load_tokenizer(str(vocab_txt)))
    assert mask.dtype == np.bool_ and mask.shape == (len(VOCAB),)
    assert [VOCAB[i] for i in np.nonzero(~mask)[0]] == ["##ish", "##s", "##believ", "##able"]
    mask = word_start_mask(wordpiece)
    vocab = wordpiece.get_vocab()
    assert mask.shape == (1500,) and mask[:5].all()
    assert all(mask[i] == (not t.startswith("##")) for t, i in vocab.items())
    enc = wordpiece.encode("extraordinarily", add_special_tokens=False)
    assert len(enc.ids) > 1 and mask[enc.ids].tolist() == [True] + [False] * (len(enc.ids) - 1)


def test_word_start_mask_unigram(unigram):
    mask = word_start_mask(unigram)
    assert mask.shape == (1500,) and mask[:5].all()  # specials count as word starts
    enc = unigram.encode("extraordinarily long", add_special_tokens=False)
    assert enc.tokens[0].startswith("▁") and enc.tokens[-1] == "▁long"
    assert mask[enc.ids].tolist() == [t.startswith("▁") for t in enc.tokens]
    assert mask[enc.ids].sum() == 2 and len(enc.ids) > 2


def test_fingerprint(wordpiece, unigram, tmp_path):
    fp = tokenizer_fingerprint(wordpiece)
    assert len(fp) == 64 and fp != tokenizer_fingerprint(unigram)
    (tmp_path / "compact.json").write_text(wordpiece.to_str(pretty=False))
    padded = Tokenizer.from_str(wordpiece.to_str())
    padded.enable_padding()
    padded.enable_truncation(32)
    assert tokenizer_fingerprint(load_tokenizer(str(tmp_path / "compact.json"))) == fp
    assert tokenizer_fingerprint(padded) == fp  # padding/truncation do not change the ids
    other = Tokenizer.from_str(wordpiece.to_str())
    other.add_tokens(["zzzword"])
    assert tokenizer_fingerprint(other) != fp


def test_train_errors(sample, tmp_path):
    with pytest.raises(UserError, match="'wordpiece' or 'unigram'"):
        train_tokenizer([str(sample[0])], 1000, kind="bpe")
    with pytest.raises(UserError, match="missing.txt: no such file"):
        train_tokenizer([str(tmp_path / "missing.txt")], 1000)
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(UserError, match="empty.txt: no documents"):
        train_tokenizer([str(tmp_path / "empty.txt")], 1000)
