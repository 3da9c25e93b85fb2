"""Shared fixtures of the end-to-end tests: a slice of the book corpus, a tokenizer, a corpus.

Everything runs through the real CLI (``electrolite.cli.main`` in-process, or the ``electrolite``
command in a subprocess where a signal or a fresh interpreter matters). Torch runs on one thread:
on a 2-core machine shared with other processes, two spinning OpenMP threads per process slow a
tiny model down by two orders of magnitude (one thread: the same losses to ~1e-8, and the golden
values are recorded with one thread).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
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

