"""Shared fixtures of the end-to-end tests: a slice of the book corpus, a tokenizer, a corpus.

Everything runs through the real CLI (``electrolite.cli.main`` in-process, or the ``electrolite``
command in a subprocess where a signal or a fresh interpreter matters). Torch runs on one thread:
on a 2-core machine shared with other processes, two spinning OpenMP threads per process slow a
tiny model down by two orders of magnitude (one thread: the same losses to ~1e-8, and the golden
values are recorded with one thread).
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import pytest

from electrolite.cli import main

BIN = Path(sys.executable).with_name("electrolite")  # the installed console script
COMMAND = [str(BIN)] if BIN.is_file() else [sys.executable, "-m", "electrolite.cli"]
# Every pre-training run in these tests: tiny, CPU, fp32, no progress bar.
TINY = ["--size", "tiny", "--precision", "fp32", "--train.device", "cpu", "--train.progress", "false"]


@dataclass
class Result:
    """Exit status and captured output of one CLI call."""

    rc: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def cli(*argv: object) -> Result:
    """Runs ``electrolite ARGV`` in this process and returns its exit code and output."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:  # argparse errors
            rc = e.code if isinstance(e.code, int) else 1
    return Result(rc, out.getvalue(), err.getvalue())


def cli_ok(*argv: object) -> Result:
    """``cli`` that must succeed."""
    r = cli(*argv)
    assert r.rc == 0, f"electrolite {' '.join(map(str, argv))} exited {r.rc}:\n{r.err}"
    return r


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               PYTHONUNBUFFERED="1")
    return env


@contextlib.contextmanager
def reaped(proc: subprocess.Popen):
    """The block runs with ``proc``; if it is still running afterwards (a failed assert), it is killed and reaped."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def cli_subprocess(*argv: object, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs the installed ``electrolite`` command (a fresh interpreter)."""
    return subprocess.run([*COMMAND, *map(str, argv)], capture_output=True, text=True, timeout=timeout,
                          env=subprocess_env())


def read_metrics(run: Path) -> tuple[list[dict], list[dict]]:
    """(training lines, validation lines) of RUN/metrics.jsonl, in file order."""
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [m for m in lines if "loss" in m], [m for m in lines if "valid_loss" in m]


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under `path` (relative name → bytes), to show that nothing changed."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def books(shared_data: Path, tmp_path_factory) -> Path:
    """The first 3000 lines of the book corpus's validation file, as a .txt (about 150 kB)."""
    src = shared_data / "gutenberg-en" / "valid.txt.gz"
    if not src.is_file():
        pytest.skip(f"{src} is missing")
    path = tmp_path_factory.mktemp("books") / "books.txt"
    with gzip.open(src, "rt", encoding="utf-8") as f:
        path.write_text("".join(islice(f, 3000)), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tokenizer_dir(books: Path, tmp_path_factory) -> Path:
    """A 2000-piece WordPiece tokenizer trained by `electrolite tokenizer train` on `books`."""
    out = tmp_path_factory.mktemp("tok") / "wordpiece"
    cli_ok("tokenizer", "train", books, "--vocab-size", 2000, "--out", out)
    return out


@pytest.fixture(scope="session")
def corpus_dir(books: Path, tokenizer_dir: Path, tmp_path_factory) -> Path:
    """`electrolite prepare` of `books` into 64-token sequences (about 620 train, 13 valid)."""
    out = tmp_path_factory.mktemp("corpus") / "books-64"
    cli_ok("prepare", books, "--tokenizer", tokenizer_dir, "--seq-len", 64, "--out", out, "--no-progress")
    return out


# --- fine-tuning fixtures (test_e2e_finetune.py, test_e2e_onnx.py) -------------------------------

TASK_FILES = {"config.yaml", "tokenizer.json", "model.safetensors", "metrics.jsonl", "eval_results.json",
              "predictions-dev.jsonl"}
QUICK = ["--max-train-examples", 200, "--epochs", 2, "--max-length", 64, "--precision", "fp32", "--no-progress"]
SQUAD_ARTICLES = 13  # all but the last 10 (3 articles) are trained on
VOCAB = Path(__file__).parent / "data" / "gutenberg-wordpiece-2000.txt"


def user_error(r, message: str | None = None) -> str:
    """Exit 2 and exactly one stderr line `electrolite: error: MESSAGE`; returns the message."""
    assert r.rc == 2, f"exit {r.rc}, stderr:\n{r.err}"
    assert "Traceback" not in r.err
    assert len(r.err_lines) == 1, r.err
    assert r.err_lines[0].startswith("electrolite: error: "), r.err_lines[0]
    text = r.err_lines[0].removeprefix("electrolite: error: ")
    if message is not None:
        assert text == message
    return text


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def out_rows(r) -> list[dict]:
    return [json.loads(line) for line in r.out.splitlines() if line.strip()]


def eval_lines(task_dir: Path, metric: str) -> list[dict]:
    return [m for m in jsonl(task_dir / "metrics.jsonl") if metric in m]


def assert_no_task_dir(out: Path) -> None:
    assert not out.exists()
    assert not out.with_name(f".{out.name}.tmp").exists()


# --- pre-trained runs and data -----------------------------------------------------------------


@pytest.fixture(scope="module")
def fixed_corpus(books: Path, tmp_path_factory) -> Path:
    """`books` in 64-token sequences with the fixed vocabulary: the same corpus in every process."""
    out = tmp_path_factory.mktemp("ft-corpus") / "books-64"
    cli_ok("prepare", books, "--tokenizer", VOCAB, "--seq-len", 64, "--out", out, "--no-progress")
    return out


@pytest.fixture(scope="module")
def electra(fixed_corpus: Path, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ft-runs") / "electra"
    cli_ok("pretrain", "--corpus", fixed_corpus, "--out", run, *TINY, "--objective", "electra", "--steps", 20,
           "--batch-size", 8, "--seed", 0, "--save-every", 20)
    return run


@pytest.fixture(scope="module")
def mlm(fixed_corpus: Path, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ft-runs") / "mlm"
    cli_ok("pretrain", "--corpus", fixed_corpus, "--out", run, *TINY, "--objective", "mlm", "--steps", 10,
           "--batch-size", 8, "--seed", 0, "--save-every", 10)
    return run


@pytest.fixture(scope="module")
def glue(shared_data: Path) -> Path:
    if not (shared_data / "glue" / "SST-2" / "dev.tsv").is_file():
        pytest.skip("GLUE data missing")
    return shared_data / "glue"


def read_conll_sentences(path: Path, n: int) -> list[list[tuple[str, str]]]:
    """The first n sentences of a CoNLL-2003 file as (word, tag) lists."""
    sentences, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if current:
                sentences.append(current)
                current = []
                if len(sentences) == n:
                    break
            continue
        current.append((fields[0], fields[-1]))
    return sentences


@pytest.fixture(scope="module")
def conll_small(shared_data: Path, tmp_path_factory) -> tuple[Path, dict[str, list]]:
    """CoNLL-2003 in its own 4-column format, the first 1000 sentences of train and 200 of valid."""
    src = shared_data / "conll2003"
    if not (src / "valid.txt").is_file():
        pytest.skip("CoNLL-2003 data missing")
    folder = tmp_path_factory.mktemp("conll") / "conll2003"
    folder.mkdir()
    split_sentences = {}
    for name, n in (("train", 1000), ("valid", 200)):
        sentences = read_conll_sentences(src / f"{name}.txt", n)
        lines = ["-DOCSTART- -X- -X- O", ""]
        for s in sentences:
            lines += [f"{w} X X {t}" for w, t in s] + [""]
        (folder / f"{name}.txt").write_text("\n".join(lines), encoding="utf-8")
        split_sentences[name] = sentences
    return folder, split_sentences


@pytest.fixture(scope="module")
def squad_small(shared_data: Path, tmp_path_factory) -> tuple[Path, list[dict]]:
    """A dev-v1.1.json of 13 articles (first paragraph, at most 4 questions each); the last 10 are held out."""
    src = shared_data / "squad-v1.1" / "dev-v1.1.json"
    if not src.is_file():
        pytest.skip("SQuAD data missing")
    data = json.loads(src.read_text(encoding="utf-8"))
    articles = [{"title": a["title"], "paragraphs": [{"context": a["paragraphs"][0]["context"],
                                                      "qas": a["paragraphs"][0]["qas"][:4]}]}
                for a in data["data"][:SQUAD_ARTICLES]]
    folder = tmp_path_factory.mktemp("squad") / "squad"
    folder.mkdir()
    (folder / "dev-v1.1.json").write_text(json.dumps({"version": "1.1", "data": articles}), encoding="utf-8")
    held_out = [dict(q, context=a["paragraphs"][0]["context"]) for a in articles[-10:]
                for q in a["paragraphs"][0]["qas"]]
    return folder, held_out


def glue_dev(path: Path, label: str) -> list[tuple[int, str, list[str]]]:
    """(line, label, fields) of each row of a GLUE dev.tsv."""
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    header = lines[0].split("\t")
    return [(n, fields[header.index(label)], fields)
            for n, fields in enumerate((line.split("\t") for line in lines[1:]), start=2)]


@pytest.fixture(scope="module")
def golden_corpus(shared_data: Path, tmp_path_factory) -> Path:
    src = shared_data / "gutenberg-en" / "valid.txt.gz"
    if not src.is_file():
        pytest.skip(f"{src} is missing")
    out = tmp_path_factory.mktemp("golden") / "corpus"
    cli_ok("prepare", src, "--tokenizer", VOCAB, "--seq-len", 64, "--out", out, "--valid-fraction", 0.03,
           "--seed", 0, "--no-progress")
    meta = json.loads((out / "meta.json").read_text())
    # The slice itself is part of the golden setup: if these move, the shared data changed.
    assert (meta["num_train"], meta["num_valid"]) == (5933, 213)
    return out


# --- fine-tuning data built from the book text, and the built-in tasks fine-tuned once -------------

@pytest.fixture(scope="module")
def book_sentences(shared_data: Path) -> list[str]:
    """Sentences of 4 to 25 words from the first 15000 lines of the book corpus's validation file."""
    src = shared_data / "gutenberg-en" / "valid.txt.gz"
    if not src.is_file():
        pytest.skip(f"{src} is missing")
    with gzip.open(src, "rt", encoding="utf-8") as f:
        text = " ".join("".join(islice(f, 15000)).split())
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text)]
    return [s for s in sentences if 4 <= len(s.split()) <= 25]


def words_of(s: str) -> set[str]:
    return set(re.findall(r"[a-z]+", s.lower()))


def write_csv(path: Path, header: list[str], rows: list) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def keyword(book_sentences, tmp_path_factory) -> dict:
    """Real sentences labelled yes/no by whether they contain the word "and", balanced; 200 for dev."""
    pos = [s for s in book_sentences if "and" in words_of(s)]
    neg = [s for s in book_sentences if "and" not in words_of(s)]
    rows = [r for a, b in zip(pos, neg) for r in ((a, "yes"), (b, "no"))]
    train, dev = rows[:-200], rows[-200:]
    folder = tmp_path_factory.mktemp("keyword")
    return {"train": write_csv(folder / "train.csv", ["text", "label"], train),
            "dev": write_csv(folder / "dev.csv", ["text", "label"], dev),
            "train_rows": train, "dev_rows": dev}


@pytest.fixture(scope="module")
def regression(book_sentences, tmp_path_factory) -> dict:
    """TSV with a numeric score: how many of "and", "the" a real sentence contains (0-2)."""
    rows = [(s, float(sum(w in words_of(s) for w in ("and", "the")))) for s in book_sentences]
    folder = tmp_path_factory.mktemp("regression")
    paths = {}
    for name, part in (("train", rows[:-200]), ("dev", rows[-200:])):
        paths[name] = folder / f"{name}.tsv"
        paths[name].write_text("text\tscore\n" + "".join(f"{t}\t{y:.1f}\n" for t, y in part), encoding="utf-8")
    return {**paths, "dev_scores": [y for _, y in rows[-200:]]}


@pytest.fixture(scope="module")
def builtin(electra, glue, conll_small, squad_small, tmp_path_factory):
    """finetune NAME (once per module) → (task dir, data path, CLI result)."""
    root = tmp_path_factory.mktemp("builtin")
    data = {"sst2": glue / "SST-2", "mrpc": glue / "MRPC", "stsb": glue / "STS-B",
            "conll2003": conll_small[0], "squad1": squad_small[0]}
    cache = {}

    def get(name: str):
        if name not in cache:
            out = root / name
            extra = ["--max-length", 128] if name == "squad1" else []  # room for a 64-token question
            cache[name] = (out, data[name], cli_ok("finetune", "--model", electra, "--task", name, "--data",
                                                   data[name], "--out", out, *QUICK, *extra))
        return cache[name]

    return get
