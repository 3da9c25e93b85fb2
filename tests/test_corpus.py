"""Text readers, `prepare` (ELECTRA example building, hold-out, shards), the dataset and the sampler."""

import gzip
import json
import os
import shutil
from itertools import islice

import numpy as np
import pytest
from safetensors.numpy import load_file

from electrolite.data.corpus import (
    EpochSampler,
    PretrainingCorpus,
    builtin_corpus_text,
    iter_documents,
    prepare,
    split_sentences,
    write_builtin_corpus,
)
from electrolite.data.tokenizer import load_tokenizer, save_tokenizer, tokenizer_fingerprint, train_tokenizer
from electrolite.errors import UserError

WORDS = ["the", "quick", "brown", "fox", "jump", "##s", ".", "over", "lazy", "dog"]
DOC_TOKENS = [f"d{i}" for i in range(1000)]  # one token per synthetic document: where each id came from


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def books(shared_data, tmp_path_factory):
    """The Gutenberg valid split (4,516 paragraphs, 1 MB), its first 2000 documents as .txt, a tokenizer."""
    root = tmp_path_factory.mktemp("books")
    full = shared_data / "gutenberg-en" / "valid.txt.gz"
    docs = list(islice(iter_documents(str(full)), 2000))
    sample = root / "sample.txt"
    sample.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    save_tokenizer(train_tokenizer([str(sample)], 2000), str(root / "tok"))
    return {"full": str(full), "sample": str(sample), "tok": str(root / "tok"), "root": root}


@pytest.fixture(scope="module")
def sample_corpus(books):
    out = books["root"] / "sample-corpus"
    meta = prepare([books["sample"]], books["tok"], 64, str(out), seed=3, valid_fraction=0.05, progress=False)
    return str(out), meta


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A hand-made WordPiece vocab and documents whose every sentence names its document (``dI``)."""
    root = tmp_path_factory.mktemp("synthetic")
    (root / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *DOC_TOKENS]))
    rng = np.random.default_rng(0)
    lines = []
    for i in range(1000):
        n = int(rng.integers(1, 40))  # sentences of 8 tokens: "dI the quick brown fox jump ##s ."
        lines.append(json.dumps({"text": " ".join([f"D{i} the quick brown fox jumps."] * n)}))
    (root / "docs.jsonl").write_text("\n".join(lines) + "\n")
    return {"vocab": str(root / "vocab.txt"), "docs": str(root / "docs.jsonl"), "root": root}


def _rows(corpus_dir, split="train"):
    c = PretrainingCorpus(corpus_dir, split)
    b = c.batch(np.arange(len(c)))
    return c, {k: v.numpy() for k, v in b.items()}


# ---------------------------------------------------------------------------------------------
# reading text
# ---------------------------------------------------------------------------------------------


def test_txt_documents(tmp_path):
    text = "\ufeffFirst line\r\n  of doc one.\r\n\r\n\r\n \t\nDoc two\nends here.\n\n\nthree"
    (tmp_path / "a.txt").write_text(text, encoding="utf-8", newline="")
    expected = ["First line of doc one.", "Doc two ends here.", "three"]
    assert list(iter_documents(str(tmp_path / "a.txt"))) == expected
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(text.encode("utf-8")))
    assert list(iter_documents(str(tmp_path / "a.txt.gz"))) == expected


def test_jsonl_documents_and_errors(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "one\\n\\ntwo", "id": 1}\n\n{"text": "  "}\n{"text": "three"}\n')
    assert list(iter_documents(str(path))) == ["one\n\ntwo", "three"]
    for line, message in (('{"text": "ok"}\n{"text": "cut', "d.jsonl line 2: not valid JSON"),
                          ('{"text": "ok"}\n\n{"body": 1}', 'd.jsonl line 3: expected an object with a string "text"'),
                          ('{"text": 5}', 'd.jsonl line 1: expected an object with a string "text"')):
        path.write_text(line)
        with pytest.raises(UserError, match=message):
            list(iter_documents(str(path)))


def test_missing_empty_unreadable(tmp_path):
    with pytest.raises(UserError, match="nope.txt: cannot read"):
        list(iter_documents(str(tmp_path / "nope.txt")))
    (tmp_path / "empty.txt").write_text("\n  \n\n")
    with pytest.raises(UserError, match="empty.txt: no documents"):
        list(iter_documents(str(tmp_path / "empty.txt")))
    (tmp_path / "bad.txt.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="bad.txt.gz: cannot read"):
        list(iter_documents(str(tmp_path / "bad.txt.gz")))


@pytest.mark.parametrize("suffix", [".txt", ".txt.gz"])
def test_invalid_utf8_names_the_byte(tmp_path, suffix):
    # A 2-byte character straddles the 1 MiB read boundary, the bad byte sits in the second chunk.
    head = b"a" * (2**20 - 1) + "é".encode() + b" more\n\nline three\nand "
    data = head + b"\xff bad\n\nlast"
    path = tmp_path / f"c{suffix}"
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    with pytest.raises(UserError) as err:
        list(iter_documents(str(path)))
    assert f"c{suffix} line 4: invalid UTF-8 at byte {len(head)}" in str(err.value)
    assert "--encoding-errors replace" in str(err.value)
    docs = list(iter_documents(str(path), errors="replace"))
    assert docs[1:] == ["line three and \ufffd bad", "last"] and docs[0].endswith("aé more")
    (tmp_path / "t.txt").write_bytes(b"fine\n\nabc\xc3")  # truncated at the very end
    with pytest.raises(UserError, match="t.txt line 3: invalid UTF-8 at byte 9 "):
        list(iter_documents(str(tmp_path / "t.txt")))


def test_split_sentences():
    doc = 'Mr. Smith went to J. R. Hall. He said "Hi!" Then "What?" he asked. End?! Yes... (Quiet.) Done'
    assert split_sentences(doc) == ["Mr. Smith went to J. R. Hall.", 'He said "Hi!"', 'Then "What?" he asked.',
                                    "End?!", "Yes...", "(Quiet.)", "Done"]
    assert split_sentences("line one\nline two.   \n\n") == ["line one", "line two."]


# ---------------------------------------------------------------------------------------------
# prepare: layout of examples
# ---------------------------------------------------------------------------------------------


def test_examples_are_well_formed(sample_corpus):
    out, meta = sample_corpus
    assert meta["num_train"] > 2000 and meta["num_valid"] > 20
    for split in ("train", "valid"):
        c, b = _rows(out, split)
        ids, seg = b["input_ids"], b["segment_lengths"]
        n, L = ids.shape
        assert L == 64 and n == meta["splits"][split]["examples"] == len(c)
        la, lb = seg[:, 0], seg[:, 1]
        length = la + 2 + np.where(lb > 0, lb + 1, 0)
        assert (la >= 1).all() and (lb >= 0).all() and (length <= L).all()
        rows = np.arange(n)
        assert (ids[:, 0] == 2).all()  # [CLS]
        assert (ids[rows, la + 1] == 3).all()  # [SEP] after A
        assert (ids[rows[lb > 0], (la + lb + 2)[lb > 0]] == 3).all()  # [SEP] after B
        pos = np.arange(L)[None, :]
        inside = pos < length[:, None]
        assert ((ids == 0) == ~inside).all()  # padding exactly at the end, nowhere else
        special = (ids == 2) | (ids == 3)
        assert special.sum(1).tolist() == (2 + (lb > 0)).tolist()  # no stray [CLS]/[SEP] inside segments
        assert (b["attention_mask"] == inside).all()
        tt = b["token_type_ids"]
        assert (tt.sum(1) == np.where(lb > 0, lb + 1, 0)).all() and (tt[rows, la + 1] == 0).all()
        assert (tt[:, 0] == 0).all() and (tt[~inside] == 0).all()
        tokens = int(inside.sum())
        assert meta["splits"][split]["tokens"] == tokens
        assert meta["splits"][split]["padding_fraction"] == pytest.approx(1 - tokens / ids.size, abs=1e-6)
    assert b["input_ids"].dtype == np.int64 and b["attention_mask"].dtype == np.bool_


def test_meta_and_shards(sample_corpus, books):
    out, meta = sample_corpus
    on_disk = json.loads(open(os.path.join(out, "meta.json")).read())
    assert on_disk == meta and meta["format_version"] == 1 and meta["seq_len"] == 64 and meta["seed"] == 3
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 2000
    assert meta["special_tokens"] == {"pad_token_id": 0, "unk_token_id": 1, "cls_token_id": 2,
                                      "sep_token_id": 3, "mask_token_id": 4}
    assert meta["tokenizer_fingerprint"] == tokenizer_fingerprint(load_tokenizer(books["tok"]))
    assert meta["tokenizer_fingerprint"] == tokenizer_fingerprint(load_tokenizer(os.path.join(out, "tokenizer.json")))
    assert meta["sources"] == [{"path": books["sample"], "bytes": os.path.getsize(books["sample"])}]
    assert meta["documents"] == 2000
    assert meta["splits"]["train"]["documents"] + meta["splits"]["valid"]["documents"] == 2000
    names = sorted(os.listdir(out))
    assert names == ["meta.json", "tokenizer.json", "train-00000.safetensors", "valid-00000.safetensors"]
    shard = load_file(os.path.join(out, "train-00000.safetensors"))
    assert shard["input_ids"].dtype == np.uint16 and shard["segment_lengths"].dtype == np.int32
    c = PretrainingCorpus(out)
    assert isinstance(c._ids[0], np.memmap) and (c._ids[0] == shard["input_ids"]).all()
    assert c.special.cls_token_id == 2 and c.seq_len == 64


def test_shards_split_and_gather_in_order(books, sample_corpus, tmp_path):
    out = str(tmp_path / "sharded")
    meta = prepare([books["sample"]], books["tok"], 64, out, seed=3, valid_fraction=0.05, shard_size=500,
                   progress=False)
    shards = meta["splits"]["train"]["shards"]
    assert [s["examples"] for s in shards[:-1]] == [500] * (len(shards) - 1) and len(shards) >= 5
    assert shards[-1]["file"] == f"train-{len(shards) - 1:05d}.safetensors"
    one, many = PretrainingCorpus(sample_corpus[0]), PretrainingCorpus(out)
    idx = np.random.default_rng(0).permutation(len(one))[:300]
    a, b = one.batch(idx), many.batch(idx)
    assert all((a[k] == b[k]).all() for k in a)
    with pytest.raises(IndexError):
        many.batch(np.array([len(many)]))


def test_large_vocab_uses_int32(tmp_path, capsys):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(70000)] + ["."]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab))
    (tmp_path / "t.txt").write_text("w69999 w1 w2. W3 w69990.\n\nw5 w6.\n")
    meta = prepare([str(tmp_path / "t.txt")], str(tmp_path / "vocab.txt"), 16, str(tmp_path / "c"),
                   valid_fraction=0, progress=True)
    assert meta["dtype"] == "int32" and meta["vocab_size"] == 70006
    summary = capsys.readouterr().err.splitlines()[-3:]  # after the progress bar
    assert summary[0].startswith(f"{tmp_path / 'c'}: 2 documents, 3 sentences, 10 tokens")
    assert summary[1].startswith("  train: 2 examples in 1 shard(s), padding 53.1%, single-segment 50.0%")  # 15 of 32
    assert load_file(str(tmp_path / "c" / "train-00000.safetensors"))["input_ids"].dtype == np.int32
    _, b = _rows(str(tmp_path / "c"))
    text = [[i for i in row if i > 4] for row in b["input_ids"].tolist()]  # without [CLS]/[SEP]/[PAD]
    assert text == [[70004, 6, 7, 70005, 8, 69995, 70005], [10, 11, 70005]]


# ---------------------------------------------------------------------------------------------
# prepare: ELECTRA's statistics, hold-out, determinism
# ---------------------------------------------------------------------------------------------


def test_single_segment_and_short_rates(synthetic, tmp_path):
    # 8-token sentences, packed. One segment: the 10% draw, plus short targets t <= 8 that take a
    # single sentence (0.9 * 0.05 * 4/60). Shorter than seq_len: short targets t <= 56, whose
    # whole sentences (8 * ceil(t / 8) tokens) leave the example short (0.05 * 52/60).
    meta = prepare([synthetic["docs"]] * 2, synthetic["vocab"], 64, str(tmp_path / "c"), valid_fraction=0,
                   pack_documents=True, progress=False, seed=1)
    _, b = _rows(str(tmp_path / "c"))
    seg = b["segment_lengths"]
    assert len(seg) > 5000
    single = (seg[:, 1] == 0).mean()
    assert single == pytest.approx(0.1 + 0.9 * 0.05 * 4 / 60, abs=0.02)
    assert meta["splits"]["train"]["single_segment_fraction"] == pytest.approx(single, abs=1e-6)
    length = seg[:, 0] + 2 + np.where(seg[:, 1] > 0, seg[:, 1] + 1, 0)
    assert (length < 64).mean() == pytest.approx(0.05 * 52 / 60, abs=0.012)


def test_gutenberg_rates_and_packing(books, tmp_path):
    stats = {}
    tokens = {}
    for pack in (False, True):
        meta = prepare([books["full"]], books["tok"], 128, str(tmp_path / str(pack)), pack_documents=pack,
                       progress=False)
        stats[pack] = meta["splits"]["train"]
        tokens[pack] = sum(s["text_tokens"] for s in meta["splits"].values())
    # Paragraphs are short: without packing most examples are one paragraph, mostly padding.
    assert stats[False]["padding_fraction"] > 0.4 and stats[True]["padding_fraction"] < 0.05
    assert stats[False]["single_segment_fraction"] > 0.5
    # 10% drawn single + long sentences that leave no room for B (ELECTRA's 50% overflow rule)
    assert 0.09 < stats[True]["single_segment_fraction"] < 0.17
    assert tokens[True] == tokens[False]  # the same text, packed differently


def test_valid_and_train_hold_disjoint_documents(synthetic, tmp_path):
    for pack in (False, True):
        out = str(tmp_path / f"c{pack}")
        meta = prepare([synthetic["docs"]], synthetic["vocab"], 32, out, valid_fraction=0.2, pack_documents=pack,
                       progress=False, seed=7)
        seen = {}
        for split in ("train", "valid"):
            _, b = _rows(out, split)
            ids = b["input_ids"]
            seen[split] = set((ids[ids >= 15] - 15).tolist())  # the dI tokens, ids 15 + I
        assert not seen["train"] & seen["valid"]
        assert meta["splits"]["valid"]["documents"] == pytest.approx(200, abs=45)
        if not pack:  # every document starts an example, so every document shows up
            assert len(seen["train"]) + len(seen["valid"]) == 1000
            assert len(seen["valid"]) == meta["splits"]["valid"]["documents"]


def test_tiny_corpus_still_gets_a_valid_split(synthetic, tmp_path):
    small = tmp_path / "small.jsonl"
    small.write_text("".join(open(synthetic["docs"]).readlines()[:40]))
    meta = prepare([str(small)], synthetic["vocab"], 32, str(tmp_path / "c"), progress=False)
    assert meta["num_valid"] >= 8 and meta["num_train"] > 2 * meta["num_valid"]
    assert meta["splits"]["valid"]["documents"] <= 10  # only every 4th document qualifies
    meta = prepare([str(small)], synthetic["vocab"], 32, str(tmp_path / "d"), valid_fraction=0, progress=False)
    assert meta["num_valid"] == 0 and meta["splits"]["valid"]["shards"] == []
    assert len(PretrainingCorpus(str(tmp_path / "d"), "valid")) == 0


def _shard_bytes(out):
    return {n: open(os.path.join(out, n), "rb").read() for n in sorted(os.listdir(out)) if n.endswith(".safetensors")}


def test_deterministic(books, sample_corpus, tmp_path):
    base = _shard_bytes(sample_corpus[0])
    kwargs = dict(seed=3, valid_fraction=0.05, progress=False)
    prepare([books["sample"]], books["tok"], 64, str(tmp_path / "w1"), workers=1, **kwargs)
    prepare([books["sample"]], books["tok"], 64, str(tmp_path / "w2"), workers=2, **kwargs)
    assert _shard_bytes(str(tmp_path / "w1")) == base == _shard_bytes(str(tmp_path / "w2"))
    kwargs["seed"] = 4
    other = _shard_bytes(str(tmp_path / "s4")) if prepare(
        [books["sample"]], books["tok"], 64, str(tmp_path / "s4"), **kwargs) else None
    assert other["train-00000.safetensors"] != base["train-00000.safetensors"]


# ---------------------------------------------------------------------------------------------
# prepare / corpus: user errors
# ---------------------------------------------------------------------------------------------


def test_prepare_user_errors(books, synthetic, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="out already exists and is not empty"):
        prepare([books["sample"]], books["tok"], 64, str(out), progress=False)
    assert os.listdir(out) == ["keep.txt"]
    prepare([synthetic["docs"]], synthetic["vocab"], 32, str(out), progress=False, overwrite=True)
    assert "keep.txt" not in os.listdir(out) and "meta.json" in os.listdir(out)
    for seq_len in (7, 4097):
        with pytest.raises(UserError, match=f"seq_len must be between 8 and 4096, got {seq_len}"):
            prepare([books["sample"]], books["tok"], seq_len, str(tmp_path / "x"), progress=False)
    with pytest.raises(UserError, match="missing.txt: no such file"):
        prepare([str(tmp_path / "missing.txt")], books["tok"], 64, str(tmp_path / "x"), progress=False)
    # A bad byte in the second file: nothing is left behind, not even the temporary directory.
    (tmp_path / "bad.txt").write_bytes(b"ok text.\n\nmore \x80 text\n")
    with pytest.raises(UserError, match="bad.txt line 3: invalid UTF-8 at byte 15"):
        prepare([books["sample"], str(tmp_path / "bad.txt")], books["tok"], 64, str(tmp_path / "x"), progress=False)
    assert sorted(os.listdir(tmp_path)) == ["bad.txt", "out"]


def test_corpus_user_errors(sample_corpus, synthetic, tmp_path):
    with pytest.raises(UserError, match=f"{tmp_path} is not a prepared corpus \\(no meta.json\\)"):
        PretrainingCorpus(str(tmp_path))
    c = PretrainingCorpus(sample_corpus[0])
    c.check_tokenizer(c.meta["tokenizer_fingerprint"])
    other = tokenizer_fingerprint(load_tokenizer(synthetic["vocab"]))
    with pytest.raises(UserError, match="was prepared with a different tokenizer than this run's"):
        c.check_tokenizer(other)
    with pytest.raises(UserError, match="no split 'test'"):
        PretrainingCorpus(sample_corpus[0], "test")
    broken = tmp_path / "broken"
    shutil.copytree(sample_corpus[0], broken)
    shard = broken / "train-00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(UserError, match="train-00000.safetensors: not a readable corpus shard"):
        PretrainingCorpus(str(broken))


# ---------------------------------------------------------------------------------------------
# EpochSampler
# ---------------------------------------------------------------------------------------------


def test_sampler_resumes_with_identical_batches():
    full = EpochSampler(103, 8, seed=5)
    assert full.batches_per_epoch == 12
    batches = [full.next_batch() for _ in range(40)]  # more than three epochs
    assert all(len(b) == 8 for b in batches)
    for stop in (0, 5, 12, 13, 30):
        first = EpochSampler(103, 8, seed=5)
        for _ in range(stop):
            first.next_batch()
        resumed = EpochSampler(103, 8, seed=5)
        resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
        assert all((resumed.next_batch() == batches[i]).all() for i in range(stop, 40))
    epoch0, epoch1 = np.concatenate(batches[:12]), np.concatenate(batches[12:24])
    assert len(set(epoch0.tolist())) == 96 and set(epoch0.tolist()) != set(epoch1.tolist())
    assert not (np.sort(epoch0)[:96] == epoch1[:96]).all()
    assert not (EpochSampler(103, 8, seed=6).next_batch() == batches[0]).all()


def test_sampler_ranks_are_disjoint_and_cover():
    ranks = [EpochSampler(100, 10, seed=1, rank=r, world_size=2) for r in range(2)]
    for _epoch in range(2):
        seen = [np.concatenate([s.next_batch() for _ in range(s.batches_per_epoch)]) for s in ranks]
        assert not set(seen[0].tolist()) & set(seen[1].tolist())
        assert sorted(np.concatenate(seen).tolist()) == list(range(100))
    # Without drop_last the epoch is padded by wrapping: every example is seen, ranks stay in step.
    ranks = [EpochSampler(105, 10, seed=1, rank=r, world_size=2, drop_last=False) for r in range(2)]
    seen = [np.concatenate([s.next_batch() for _ in range(s.batches_per_epoch)]) for s in ranks]
    assert ranks[0].batches_per_epoch == ranks[1].batches_per_epoch == 6
    assert set(np.concatenate(seen).tolist()) == set(range(105)) and len(seen[0]) == len(seen[1]) == 53
    with pytest.raises(UserError, match="too few"):
        EpochSampler(15, 8, seed=0, world_size=2)


def test_sampler_state_moves_between_numbers_of_ranks():
    two = EpochSampler(1000, 10, seed=3, rank=1, world_size=2)  # 50 batches per epoch per rank
    for _ in range(20):
        two.next_batch()
    state = two.state_dict()
    assert (state["world_size"], state["batch_size"], state["position"]) == (2, 10, 20)
    same = EpochSampler(1000, 10, seed=3, rank=1, world_size=2)
    same.load_state_dict(state)
    assert (same.next_batch() == two.next_batch()).all()  # same layout: exactly the next batch
    one = EpochSampler(1000, 10, seed=3)  # 100 batches per epoch: 40% of the epoch was taken
    one.load_state_dict(state)
    assert (one.epoch, one.position) == (0, 40)
    four = EpochSampler(1000, 5, seed=3, rank=2, world_size=4)  # 50 batches per epoch
    four.load_state_dict(state)
    assert four.position == 20


# ---------------------------------------------------------------------------------------------
# the built-in corpus
# ---------------------------------------------------------------------------------------------


def test_builtin_corpus(tmp_path):
    first = list(islice(builtin_corpus_text(), 50))
    assert first == list(islice(builtin_corpus_text(), 50))  # fixed order
    info = write_builtin_corpus(str(tmp_path / "builtin.txt"))
    docs = list(iter_documents(info["path"]))
    assert info["documents"] == len(docs) > 5000 and info["bytes"] > 2_000_000  # 3.0 MB on CPython 3.11
    assert docs[:50] == [d.replace("\n", " ") for d in first]  # blank lines only between documents
    assert len(set(docs)) == len(docs)  # duplicates dropped
    assert sum("Return" in d for d in docs) > 1000  # docstrings are in it
