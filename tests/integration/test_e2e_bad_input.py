"""Mistakes a user can make: one line `electrolite: error: ...`, exit 2, no traceback, nothing touched."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pytest
import yaml

from .conftest import TINY, cli, cli_ok, cli_subprocess, snapshot


def assert_user_error(r, message: str | None = None, *, startswith: str | None = None) -> str:
    """Exit 2 and exactly one stderr line `electrolite: error: MESSAGE`; returns the message."""
    assert r.rc == 2, f"exit {r.rc}, stderr:\n{r.err}"
    assert "Traceback" not in r.err
    assert len(r.err_lines) == 1, r.err
    line = r.err_lines[0]
    assert line.startswith("electrolite: error: "), line
    text = line.removeprefix("electrolite: error: ")
    if message is not None:
        assert text == message
    if startswith is not None:
        assert text.startswith(startswith), text
    return text


def pretrain_args(corpus: Path, run: Path, *extra: object) -> list[object]:
    return ["pretrain", "--corpus", corpus, "--out", run, *TINY, "--objective", "electra", "--steps", 4,
            "--batch-size", 8, "--seed", 0, "--save-every", 2, "--train.eval_batches", 1, *extra]


@pytest.fixture(scope="module")
def finished_run(corpus_dir: Path, tmp_path_factory) -> Path:
    """A finished 4-step run; tests copy it before touching it."""
    run = tmp_path_factory.mktemp("bad") / "run"
    cli_ok(*pretrain_args(corpus_dir, run))
    return run


@pytest.fixture
def run_copy(finished_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    return run


# --- input files -------------------------------------------------------------------------------


def test_missing_file_real_command(tmp_path: Path, tokenizer_dir: Path):
    """The installed command, in a fresh interpreter: exactly one line on stderr."""
    missing = tmp_path / "nope.txt"
    out = tmp_path / "corpus"
    p = cli_subprocess("prepare", missing, "--tokenizer", tokenizer_dir, "--seq-len", 64, "--out", out)
    assert p.returncode == 2
    assert p.stderr == f"electrolite: error: {missing}: no such file\n"
    assert p.stdout == ""
    assert not out.exists()


def test_missing_file(tmp_path: Path, tokenizer_dir: Path):
    missing = tmp_path / "nope.txt"
    assert_user_error(cli("tokenizer", "train", missing, "--vocab-size", 2000, "--out", tmp_path / "tok"),
                      f"{missing}: no such file")
    assert not (tmp_path / "tok").exists()
    assert_user_error(cli("prepare", missing, "--tokenizer", tokenizer_dir, "--seq-len", 64,
                          "--out", tmp_path / "c", "--no-progress"), f"{missing}: no such file")
    assert not (tmp_path / "c").exists()


def test_missing_corpus_dir(tmp_path: Path):
    run = tmp_path / "run"
    assert_user_error(cli(*pretrain_args(tmp_path / "no-corpus", run)),
                      f"{tmp_path / 'no-corpus'} is not a prepared corpus (no meta.json)")
    assert not run.exists()


def test_missing_tokenizer(tmp_path: Path, books: Path):
    assert_user_error(cli("prepare", books, "--tokenizer", tmp_path / "no-tok", "--seq-len", 64,
                          "--out", tmp_path / "c", "--no-progress"),
                      f"{tmp_path / 'no-tok'}: no such tokenizer file or directory")
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("content", [b"", b"\n\n   \n\n"])
def test_empty_file(tmp_path: Path, tokenizer_dir: Path, content: bytes):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(content)
    assert_user_error(cli("tokenizer", "train", empty, "--vocab-size", 2000, "--out", tmp_path / "tok"),
                      f"{empty}: no documents (the file is empty)")
    assert not (tmp_path / "tok").exists()
    assert_user_error(cli("prepare", empty, "--tokenizer", tokenizer_dir, "--seq-len", 64,
                          "--out", tmp_path / "c", "--no-progress"), f"{empty}: no documents (the file is empty)")
    assert not (tmp_path / "c").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["empty.txt"]  # no temporary directory left behind


def test_unreadable_file(tmp_path: Path, tokenizer_dir: Path, books: Path):
    locked = tmp_path / "locked.txt"
    shutil.copyfile(books, locked)
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as root: a mode-000 file is still readable")
        r = cli("prepare", locked, "--tokenizer", tokenizer_dir, "--seq-len", 64, "--out", tmp_path / "c",
                "--no-progress")
        assert_user_error(r, f"{locked}: cannot read (Permission denied)")
        assert not (tmp_path / "c").exists()
        assert_user_error(cli("tokenizer", "train", locked, "--vocab-size", 2000, "--out", tmp_path / "t"),
                          f"{locked}: cannot read (Permission denied)")
    finally:
        locked.chmod(0o644)


def test_truncated_gzip(tmp_path: Path, tokenizer_dir: Path, books: Path):
    whole = gzip.compress(books.read_bytes())
    broken = tmp_path / "broken.txt.gz"
    broken.write_bytes(whole[: len(whole) // 2])
    text = assert_user_error(cli("prepare", broken, "--tokenizer", tokenizer_dir, "--seq-len", 64,
                                 "--out", tmp_path / "c", "--no-progress"), startswith=f"{broken}: cannot read (")
    assert "end-of-stream" in text
    assert not (tmp_path / "c").exists()


def _with_bad_byte(books: Path, path: Path, at_least: int) -> tuple[int, int]:
    """Writes books' text (repeated up to `at_least` bytes) with one 0xFF byte after the first
    line break at or past `at_least` - 40; returns (byte offset, 1-based line)."""
    data = books.read_bytes()
    while len(data) < at_least:
        data += b"\n\n" + books.read_bytes()
    cut = data.index(b"\n", max(0, at_least - 40)) + 1
    offset = cut + 5  # inside the next line
    path.write_bytes(data[:offset] + b"\xff" + data[offset:])
    return offset, data[:offset].count(b"\n") + 1


@pytest.mark.parametrize("where", [1000, (1 << 20) + 100])  # in the first read, and past the first 1 MiB chunk
def test_non_utf8_names_file_and_byte_offset(tmp_path: Path, tokenizer_dir: Path, books: Path, where: int):
    bad = tmp_path / "latin.txt"
    offset, line = _with_bad_byte(books, bad, where)
    expected = (f"{bad} line {line}: invalid UTF-8 at byte {offset} "
                "(use --encoding-errors replace to substitute U+FFFD)")
    assert bad.read_bytes()[offset] == 0xFF
    r = cli("prepare", bad, "--tokenizer", tokenizer_dir, "--seq-len", 64, "--out", tmp_path / "c", "--no-progress")
    assert_user_error(r, expected)
    assert not (tmp_path / "c").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latin.txt"]
    if where < 10000:
        assert_user_error(cli("tokenizer", "train", bad, "--vocab-size", 2000, "--out", tmp_path / "tok"), expected)
        assert not (tmp_path / "tok").exists()
        cli_ok("tokenizer", "train", bad, "--vocab-size", 2000, "--out", tmp_path / "tok",
               "--encoding-errors", "replace")
        assert (tmp_path / "tok" / "tokenizer.json").is_file()
    cli_ok("prepare", bad, "--tokenizer", tokenizer_dir, "--seq-len", 64, "--out", tmp_path / "c", "--no-progress",
           "--encoding-errors", "replace")
    assert (tmp_path / "c" / "meta.json").is_file()


# --- configuration -----------------------------------------------------------------------------


def test_unknown_key_in_yaml_is_named(corpus_dir: Path, tmp_path: Path):
    config = tmp_path / "typo.yaml"
    config.write_text("size: tiny\nmodel:\n  hiden_size: 64\n")
    run = tmp_path / "run"
    assert_user_error(cli("pretrain", "--config", config, "--corpus", corpus_dir, "--out", run),
                      "unknown config key: model.hiden_size")
    assert not run.exists()
    config.write_text("size: tiny\ntrian:\n  steps: 3\n")
    assert_user_error(cli("pretrain", "--config", config, "--corpus", corpus_dir, "--out", run),
                      "unknown config key: trian")
    assert not run.exists()


def test_unknown_dotted_flag_is_an_argparse_error(corpus_dir: Path, tmp_path: Path):
    run = tmp_path / "run"
    r = cli(*pretrain_args(corpus_dir, run, "--model.hiden_size", 64))
    assert r.rc == 2
    assert "Traceback" not in r.err
    assert r.err_lines[-1] == "electrolite: error: unrecognized arguments: --model.hiden_size 64"
    assert not run.exists()


def test_bad_value_type_is_named(corpus_dir: Path, tmp_path: Path):
    run = tmp_path / "run"
    assert_user_error(cli(*pretrain_args(corpus_dir, run, "--model.num_hidden_layers", "two")),
                      "config model.num_hidden_layers must be int, got 'two'")
    assert not run.exists()


def test_hidden_size_not_divisible_by_heads(corpus_dir: Path, tmp_path: Path):
    run = tmp_path / "run"
    assert_user_error(cli(*pretrain_args(corpus_dir, run, "--model.hidden_size", 66, "--model.num_attention_heads", 4)),
                      "model.hidden_size 66 is not divisible by model.num_attention_heads 4")
    assert not run.exists()


def test_layers_not_divisible_by_groups(corpus_dir: Path, tmp_path: Path):
    run = tmp_path / "run"
    assert_user_error(cli(*pretrain_args(corpus_dir, run, "--model.num_hidden_layers", 3,
                                         "--model.num_hidden_groups", 2)),
                      "model.num_hidden_layers 3 is not divisible by model.num_hidden_groups 2")
    assert not run.exists()


# --- resuming ----------------------------------------------------------------------------------


def test_corpus_with_another_tokenizer(run_copy: Path, books: Path, tmp_path: Path):
    tok = tmp_path / "unigram"
    cli_ok("tokenizer", "train", books, "--vocab-size", 2000, "--kind", "unigram", "--out", tok)
    other = tmp_path / "other-corpus"
    cli_ok("prepare", books, "--tokenizer", tok, "--seq-len", 64, "--out", other, "--no-progress")
    before = snapshot(run_copy)
    assert_user_error(cli(*pretrain_args(other, run_copy)),
                      f"corpus {other} was prepared with a different tokenizer than run {run_copy}'s")
    assert snapshot(run_copy) == before


def test_resume_with_another_config(run_copy: Path, corpus_dir: Path):
    before = snapshot(run_copy)
    text = assert_user_error(cli(*pretrain_args(corpus_dir, run_copy, "--model.hidden_size", 128)))
    assert text == (f"{run_copy} holds a run with another config (model.embedding_size, model.hidden_size, "
                    "model.intermediate_size differ); use a new --out or the same settings to resume")
    # an ELECTRA run with the default recipe: the recipe's fields differ too (masked LM keeps the paper's values)
    assert_user_error(cli(*pretrain_args(corpus_dir, run_copy, "--lr", 1e-3, "--objective", "mlm")),
                      f"{run_copy} holds a run with another config (objective.curriculum_fraction, "
                      "objective.embedding_sharing, objective.generator_lr_scale, objective.mask_token_frac, "
                      "objective.name, objective.random_token_frac, objective.recipe, objective.temperature_start, "
                      "objective.two_stage_fraction, objective.uniform_replace_start, train.learning_rate differ); "
                      "use a new --out or the same settings to resume")
    after = snapshot(run_copy)
    assert after["config.yaml"] == before["config.yaml"]
    assert after["model.safetensors"] == before["model.safetensors"]
    assert after == before


def test_resume_may_change_steps(run_copy: Path, corpus_dir: Path):
    """The control for the test above: train.steps may change on resume, and so may the run's
    location (run_copy is a copy of the run in another directory)."""
    r = cli_ok(*pretrain_args(corpus_dir, run_copy, "--steps", 6))
    assert r.out.startswith(f"completed at step 6/6 in {run_copy}")
    cfg = yaml.safe_load((run_copy / "config.yaml").read_text())
    assert cfg["train"]["steps"] == 6 and cfg["out"] == str(run_copy)


def test_prepare_into_non_empty_dir(books: Path, tokenizer_dir: Path, tmp_path: Path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert_user_error(cli("prepare", books, "--tokenizer", tokenizer_dir, "--seq-len", 64, "--out", out,
                          "--no-progress"),
                      f"{out} already exists and is not empty (use --overwrite to replace it)")
    assert snapshot(out) == {"notes.txt": b"mine"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_out_is_an_existing_non_run_dir(corpus_dir: Path, tmp_path: Path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "cat.jpg").write_bytes(b"\xff\xd8")
    assert_user_error(cli(*pretrain_args(corpus_dir, out)),
                      f"{out} exists and is not an electrolite run (no config.yaml); choose a new --out")
    assert snapshot(out) == {"cat.jpg": b"\xff\xd8"}


@pytest.mark.parametrize("damage", ["truncate", "flip"])
@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors"])
def test_corrupted_checkpoint_is_detected(run_copy: Path, corpus_dir: Path, damage: str, name: str):
    path = run_copy / "checkpoints" / "step-00000004" / name
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) - 100]
    else:
        data[len(data) // 2] ^= 0x01  # one bit in the middle of the tensor data
    path.write_bytes(bytes(data))
    before = snapshot(run_copy)
    for steps in (4, 8):  # re-running the same command, and asking for more steps
        assert_user_error(cli(*pretrain_args(corpus_dir, run_copy, "--steps", steps)),
                          f"{path}: checksum mismatch, the checkpoint is truncated or corrupted")
        assert snapshot(run_copy) == before


def test_latest_names_a_missing_checkpoint(run_copy: Path, corpus_dir: Path):
    shutil.rmtree(run_copy / "checkpoints" / "step-00000004")
    before = snapshot(run_copy)
    assert_user_error(cli(*pretrain_args(corpus_dir, run_copy)),
                      f"{run_copy / 'checkpoints' / 'latest'} names step-00000004, which is not a complete checkpoint")
    assert snapshot(run_copy) == before
