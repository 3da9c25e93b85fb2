"""Surviving crashes: SIGKILL at random moments and in the middle of checkpoint writes, runs of
non-finite steps, a full or read-only disk, damaged checkpoints.

Every case ends with `checkpoints/latest` naming a complete checkpoint whose checksums verify, and
the runs that can go on end bit-identical to an uninterrupted run of the same command.
"""

from __future__ import annotations

import ast
import dataclasses
import errno
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from electrolite import pretrain
from electrolite.training import checkpoint

from .conftest import COMMAND, TINY, cli, cli_ok, read_metrics, reaped, snapshot, subprocess_env, user_error

SRC = Path(__file__).resolve().parents[2] / "src" / "electrolite"
RESUMED = re.compile(r"^electrolite: resuming from step-(\d{8}) \(step (\d+)/\d+\)$", re.M)


def pretrain_args(corpus: Path, run: Path, steps: int, save_every: int, *extra: object) -> list[str]:
    return [str(a) for a in ("pretrain", "--corpus", corpus, "--out", run, *TINY, "--objective", "electra",
                             "--steps", steps, "--batch-size", 8, "--seed", 0, "--save-every", save_every,
                             "--train.keep_last", 2, "--train.log_every", 1, "--train.eval_every", 0,
                             "--train.eval_batches", 1, *extra)]


def latest_step(run: Path) -> int | None:
    """The step of the checkpoint `latest` names, after checking it is complete and its checksums match."""
    path = checkpoint.latest_checkpoint(run)
    if path is None:
        return None
    state = checkpoint.verify_checkpoint(path)
    assert path.name == f"step-{state['step']:08d}"
    return state["step"]


def checkpoint_dirs(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir())


def temp_names(run: Path) -> list[str]:
    """Temporary files and directories anywhere in the run (ours and safetensors' own)."""
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.name.startswith(".") and "tmp" in p.name)


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs"


def training_lines(run: Path) -> list[dict]:
    """metrics.jsonl's training lines without the timing fields (which differ from run to run)."""
    return [{k: v for k, v in m.items() if k not in ("tokens_per_second", "elapsed_seconds")}
            for m in read_metrics(run)[0]]


# --- SIGKILL at random moments and during checkpoint writes --------------------------------------

N = 36  # steps of the killed run: a checkpoint after every step, so a large share of its time goes to writing them
SAVE_EVERY = 1
RANDOM_KILLS = 5  # each 1-4 logged steps and a random share of two steps' time in: the run never ends first


@pytest.fixture(scope="module")
def uninterrupted(fixed_corpus: Path, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("survive") / "uninterrupted"
    cli_ok(*pretrain_args(fixed_corpus, run, N, SAVE_EVERY))
    return run


def partial_writes(run: Path, pid: int) -> set[str]:
    """What a process killed in the middle of saving a checkpoint leaves: its temporary names, or a
    renamed checkpoint that `latest` does not name yet."""
    ck = run / "checkpoints"
    found = {p.name for pattern in (f".tmp-step-*-{pid}", f".latest.tmp-{pid}") for p in ck.glob(pattern)}
    found |= {p.name for p in run.glob(f".model.safetensors.tmp-{pid}")}
    latest = (ck / "latest").read_text().strip() if (ck / "latest").exists() else ""
    return found | {p.name for p in ck.glob("step-*") if p.name > latest}


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.001)


def logged_step(run: Path) -> int:
    """The last step with a training line in metrics.jsonl (0 if none)."""
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    steps = [json.loads(line)["step"] for line in lines if line.endswith("}") and '"loss"' in line]
    return max(steps, default=0)


def test_sigkill_at_random_moments_and_during_checkpoint_writes(fixed_corpus: Path, tmp_path: Path,
                                                                 uninterrupted: Path):
    run = tmp_path / "killed"
    argv = pretrain_args(fixed_corpus, run, N, SAVE_EVERY)
    draw = random.Random(20261122)
    kills, during_write, history = 0, 0, []
    plan = ["random"] * RANDOM_KILLS + ["write"] * 4  # write-timed kills until one lands in a write
    for attempt, mode in enumerate(plan):
        if mode == "write" and during_write and kills >= RANDOM_KILLS + 1:
            break
        before = latest_step(run) if (run / "checkpoints").exists() else None
        err_path = tmp_path / f"stderr-{attempt}.txt"
        with open(err_path, "w") as err:
            proc = subprocess.Popen([*COMMAND, *argv], stdout=subprocess.DEVNULL, stderr=err, env=subprocess_env())
        with reaped(proc):
            if before is None:  # a fresh start: wait for its first training line
                wait_for(lambda: logged_step(run) > 0, proc, "a training step")
            else:  # printed right before the loop: the resumed run trains from here on
                wait_for(lambda: RESUMED.search(err_path.read_text()), proc, "the resume line")
            if mode == "random":  # seeded: k more steps, then a random share of two steps' time (writes included)
                k, share = draw.randint(1, 4), draw.random()
                started, first = time.monotonic(), logged_step(run)
                wait_for(lambda: logged_step(run) >= first + k, proc, f"{k} more steps")
                time.sleep(share * 2 * (time.monotonic() - started) / k)
            else:  # kill the moment this process starts writing a checkpoint
                wait_for(lambda: any((run / "checkpoints").glob(f".tmp-step-*-{proc.pid}")), proc,
                         "a checkpoint write")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        err_text = err_path.read_text()
        assert proc.returncode == -signal.SIGKILL, f"attempt {attempt} ended by itself ({proc.returncode}):\n{err_text}"
        assert "Traceback" not in err_text, err_text
        resumed = RESUMED.search(err_text)
        # It went on from the checkpoint `latest` named when it started (none: from the beginning).
        assert (int(resumed.group(2)) if resumed else None) == before, (attempt, err_text)
        in_write = partial_writes(run, proc.pid)
        kills += 1
        during_write += bool(in_write)
        after = latest_step(run)  # still a complete checkpoint whose checksums match
        assert after is None or before is None or after >= before
        history.append(f"{mode} kill: resumed at {before}, latest {after}"
                       + (f", killed mid-write ({', '.join(sorted(in_write))})" if in_write else ""))

    report = f"survived {kills} SIGKILLs, {during_write} during a checkpoint write:\n  " + "\n  ".join(history)
    print(report)
    assert kills >= RANDOM_KILLS + 1, report
    assert during_write >= 1, report

    before = latest_step(run)
    r = subprocess.run([*COMMAND, *argv], capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"completed at step {N}/{N} in {run}")
    resumed = RESUMED.search(r.stderr)
    assert resumed and int(resumed.group(2)) == before, r.stderr
    assert_same_weights(run / "model.safetensors", uninterrupted / "model.safetensors")
    assert_same_weights(run / "checkpoints" / f"step-{N:08d}" / "model.safetensors",
                        uninterrupted / "checkpoints" / f"step-{N:08d}" / "model.safetensors")
    assert training_lines(run) == training_lines(uninterrupted)  # every step logged once, loss for loss
    assert checkpoint_dirs(run) == [f"step-{N - SAVE_EVERY:08d}", f"step-{N:08d}"]  # keep_last 2
    assert latest_step(run) == N
    assert temp_names(run) == []  # what the kills left was cleaned up by the next saves


# --- non-finite steps ----------------------------------------------------------------------------


def test_nonfinite_steps_stop_the_run_and_keep_the_last_good_checkpoint(fixed_corpus: Path, tmp_path: Path):
    """--lr 1e9: the first step is finite and applied, every later loss is NaN."""
    run = tmp_path / "diverged"
    argv = pretrain_args(fixed_corpus, run, 20, 1, "--lr", 1e9)
    reason = ("stopped: 10 non-finite steps in a row at step 11 (loss nan, grad norm nan); "
              "the last good checkpoint is step-00000001")
    r = subprocess.run([*COMMAND, *argv], capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert (r.returncode, r.stdout, r.stderr) == (2, "", f"electrolite: error: {reason}\n")
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["stop_reason"], summary["step"], summary["skipped_steps"]) == (reason, 11, 10)
    train = read_metrics(run)[0]
    assert [m["step"] for m in train] == list(range(1, 12))
    assert [m["skipped_steps"] for m in train] == list(range(0, 11))
    assert train[0]["loss"] == train[0]["loss"] and all(m["loss"] != m["loss"] for m in train[1:])  # NaN from step 2
    # Nothing of the diverged state was saved: latest is the step-1 checkpoint, intact
    assert checkpoint_dirs(run) == ["step-00000001"] and latest_step(run) == 1
    assert (run / "model.safetensors").read_bytes() == (run / "checkpoints" / "step-00000001" / "model.safetensors"
                                                        ).read_bytes()

    # Re-running the same command goes on from that checkpoint, diverges the same way, changes nothing
    before = snapshot(run / "checkpoints"), (run / "model.safetensors").read_bytes()
    again = cli(*argv)
    assert again.rc == 2 and again.err_lines == ["electrolite: resuming from step-00000001 (step 1/20)",
                                                 f"electrolite: error: {reason}"]
    assert (snapshot(run / "checkpoints"), (run / "model.safetensors").read_bytes()) == before


def nan_losses(monkeypatch, steps: set[int]) -> None:
    """Training forward pass number s (= step s, one micro-batch a step) returns a NaN loss for s in `steps`."""
    build = pretrain.RunSetup.build_model

    def build_model(self):
        model = build(self)
        calls = iter(range(1, 10**9))

        def hook(module, args, out):
            if module.training and next(calls) in steps:
                return dataclasses.replace(out, loss=out.loss * float("nan"))
        model.register_forward_hook(hook)
        return model
    monkeypatch.setattr(pretrain.RunSetup, "build_model", build_model)


def test_a_finite_step_resets_the_count_and_no_checkpoint_is_taken_mid_streak(fixed_corpus: Path, tmp_path: Path,
                                                                            monkeypatch):
    run = tmp_path / "streaks"
    nan_losses(monkeypatch, {3, 4} | set(range(7, 100)))
    r = cli(*pretrain_args(fixed_corpus, run, 12, 2, "--train.max_nonfinite_steps", 3, "--train.keep_last", 3))
    reason = ("stopped: 3 non-finite steps in a row at step 9 (loss nan, grad norm nan); "
              "the last good checkpoint is step-00000006")
    assert user_error(r) == reason
    train = read_metrics(run)[0]
    assert [m["skipped_steps"] for m in train] == [0, 0, 1, 2, 2, 2, 3, 4, 5]
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["stop_reason"], summary["step"], summary["skipped_steps"]) == (reason, 9, 5)
    # Steps 4 and 8 fell in a streak: no checkpoint there; step 6 (after a finite step) is the last good one
    assert checkpoint_dirs(run) == ["step-00000002", "step-00000006"] and latest_step(run) == 6


def test_max_nonfinite_steps_0_never_stops(fixed_corpus: Path, tmp_path: Path, monkeypatch):
    run = tmp_path / "never"
    nan_losses(monkeypatch, set(range(3, 100)))
    r = cli_ok(*pretrain_args(fixed_corpus, run, 14, 2, "--train.max_nonfinite_steps", 0))
    assert r.out.startswith("completed at step 14/14")
    assert json.loads((run / "summary.json").read_text())["skipped_steps"] == 12
    assert latest_step(run) == 14
    assert user_error(cli(*pretrain_args(fixed_corpus, tmp_path / "x", 4, 2, "--train.max_nonfinite_steps", -1))
                      ) == "train.max_nonfinite_steps must be at least 0 (0: never stop), got -1"


# --- disk full, read-only checkpoints --------------------------------------------------------------

SHORT = 6  # steps of the disk-full runs: checkpoints at 2, 4 (the one that fails) and 6


@pytest.fixture(scope="module")
def short_reference(fixed_corpus: Path, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("survive") / "short"
    cli_ok(*pretrain_args(fixed_corpus, run, SHORT, 2))
    return run


def enospc(path: object) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


@pytest.mark.parametrize("where", ["optimizer.safetensors", "latest", "RUN/model.safetensors"])
def test_disk_full_while_saving_keeps_the_previous_checkpoint(fixed_corpus: Path, tmp_path: Path, monkeypatch,
                                                              short_reference: Path, where: str):
    run = tmp_path / "full"
    ck = run / "checkpoints"
    seen = []

    def fail_second(path: Path) -> None:  # the second write of this file: half of it, then ENOSPC
        seen.append(path)
        if len(seen) == 2:
            Path(path).write_bytes(b"\0" * 1000)
            raise enospc(path)

    if where == "optimizer.safetensors":
        write = checkpoint._write_safetensors

        def patched(tensors, path, metadata=None):
            if Path(path).name == where:
                fail_second(path)
            write(tensors, path, metadata)
        monkeypatch.setattr(checkpoint, "_write_safetensors", patched)
        failed, last_good = f"{ck}/.tmp-step-00000004-{os.getpid()}/optimizer.safetensors", 2
        message = f"cannot write checkpoint step-00000004: No space left on device ({failed}); " \
                  f"the last good checkpoint is step-00000002"
    elif where == "latest":
        write = checkpoint._write_bytes

        def patched(path, data):
            if Path(path).name.startswith(".latest.tmp-"):
                fail_second(path)
            write(path, data)
        monkeypatch.setattr(checkpoint, "_write_bytes", patched)
        failed, last_good = f"{ck}/.latest.tmp-{os.getpid()}", 2
        message = f"cannot write checkpoint step-00000004: No space left on device ({failed}); " \
                  f"the last good checkpoint is step-00000002"
    else:  # the checkpoint is complete and `latest`; its copy to RUN/model.safetensors fails
        copy = shutil.copyfile

        def patched(src, dst, *args, **kwargs):
            if Path(dst).name.startswith(".model.safetensors.tmp-"):
                fail_second(dst)
            return copy(src, dst, *args, **kwargs)
        monkeypatch.setattr(checkpoint.shutil, "copyfile", patched)
        last_good = 4
        message = f"cannot write {run}/model.safetensors: No space left on device; " \
                  f"the last good checkpoint is step-00000004"
    argv = pretrain_args(fixed_corpus, run, SHORT, 2)
    assert user_error(cli(*argv)) == message
    assert latest_step(run) == last_good
    assert checkpoint_dirs(run) == [f"step-{s:08d}" for s in (2, 4)[:last_good // 2]]
    assert temp_names(run) == []  # the half-written file and its directory are gone
    # RUN/model.safetensors is still the step-2 one
    assert (run / "model.safetensors").read_bytes() == (ck / "step-00000002" / "model.safetensors").read_bytes()

    # With space again, the same command resumes from the last good checkpoint and ends as if nothing happened
    monkeypatch.undo()
    r = cli_ok(*argv)
    assert r.err_lines == [f"electrolite: resuming from step-{last_good:08d} (step {last_good}/{SHORT})"]
    assert_same_weights(run / "model.safetensors", short_reference / "model.safetensors")
    assert training_lines(run) == training_lines(short_reference)
    assert temp_names(run) == []


def test_a_write_error_from_the_os_itself(fixed_corpus: Path, tmp_path: Path):
    """A real failed write (no mock): a 2 MB file-size limit (RLIMIT_FSIZE) lets the 1.2 MB model file through
    and stops the 2.4 MB optimizer file with EFBIG, which safetensors reports as its own error."""
    run = tmp_path / "limited"
    cli_ok(*pretrain_args(fixed_corpus, run, 4, 2))
    before = snapshot(run / "checkpoints")
    argv = pretrain_args(fixed_corpus, run, SHORT, 2)

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    proc = subprocess.Popen([*COMMAND, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=subprocess_env(), preexec_fn=limit)
    out, err = proc.communicate(timeout=120)
    failed = f"{run}/checkpoints/.tmp-step-00000006-{proc.pid}/optimizer.safetensors"
    assert (proc.returncode, out) == (2, "")
    assert err.splitlines() == ["electrolite: resuming from step-00000004 (step 4/6)",
                                f"electrolite: error: cannot write checkpoint step-00000006: File too large "
                                f"({failed}); the last good checkpoint is step-00000004"]
    assert snapshot(run / "checkpoints") == before and temp_names(run) == []

    r = cli_ok(*argv)  # without the limit it goes on from step 4
    assert r.err_lines == ["electrolite: resuming from step-00000004 (step 4/6)"] and latest_step(run) == SHORT


def test_unwritable_checkpoints_dir(fixed_corpus: Path, tmp_path: Path):
    """Mode 0500 (as root, which writes there anyway: the immutable attribute, where the file system has one)."""
    run = tmp_path / "read-only"
    cli_ok(*pretrain_args(fixed_corpus, run, 4, 2))
    ck = run / "checkpoints"
    before = snapshot(ck)
    if os.geteuid() != 0:
        lock, unlock, code = ["chmod", "0500", ck], ["chmod", "0700", ck], errno.EACCES
    else:
        lock, unlock, code = ["chattr", "+i", ck], ["chattr", "-i", ck], errno.EPERM
        if shutil.which("chattr") is None or subprocess.run(lock, capture_output=True).returncode != 0:
            pytest.skip("running as root, where mode 0500 does not stop writes, without chattr +i on this file system")
    try:
        subprocess.run(lock, check=True)
        r = cli(*pretrain_args(fixed_corpus, run, SHORT, 2))
        assert r.rc == 2 and "Traceback" not in r.err
        assert r.err_lines == ["electrolite: resuming from step-00000004 (step 4/6)",
                               f"electrolite: error: cannot write checkpoint step-00000006: {os.strerror(code)} "
                               f"({ck}/.tmp-step-00000006-{os.getpid()}); the last good checkpoint is step-00000004"]
    finally:
        subprocess.run(unlock, check=True)
    assert snapshot(ck) == before and latest_step(run) == 4


# --- damaged checkpoints are reported, never loaded -------------------------------------------------


@pytest.fixture
def damaged_run(short_reference: Path, tmp_path: Path) -> Path:
    run = tmp_path / "damaged"
    shutil.copytree(short_reference, run)
    return run


@pytest.mark.parametrize("damage", ["truncate rng.safetensors", "delete optimizer.safetensors",
                                    "truncate state.json", "drop a checksum"])
def test_damaged_checkpoint_is_reported_not_loaded(damaged_run: Path, fixed_corpus: Path, damage: str):
    ck = damaged_run / "checkpoints" / f"step-{SHORT:08d}"
    action, name = damage.split(" ", 1)
    if action == "truncate":
        data = (ck / name).read_bytes()
        (ck / name).write_bytes(data[: len(data) // 2])
    elif action == "delete":
        (ck / name).unlink()
    else:
        state = json.loads((ck / "state.json").read_text())
        del state["checksums"]["model.safetensors"]
        (ck / "state.json").write_text(json.dumps(state))
    before = snapshot(damaged_run)
    message = user_error(cli(*pretrain_args(fixed_corpus, damaged_run, SHORT + 2, 2)))
    expected = {
        "truncate rng.safetensors": f"{ck / 'rng.safetensors'}: checksum mismatch, the checkpoint is truncated "
                                    f"or corrupted",
        "delete optimizer.safetensors": f"{ck / 'optimizer.safetensors'}: checksum mismatch, the checkpoint is "
                                        f"truncated or corrupted",
        "truncate state.json": f"{ck / 'state.json'}: unreadable checkpoint state (",  # then json's own words
        "drop a checksum": f"{ck / 'state.json'}: no checksum for model.safetensors, the checkpoint is incomplete",
    }[damage]
    assert message.startswith(expected) if expected.endswith("(") else message == expected, message
    assert snapshot(damaged_run) == before


def test_no_pickle_anywhere_in_src():
    """Every torch.load in the package passes weights_only=True; nothing imports pickle."""
    loads = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                flags = {k.arg: k.value for k in node.keywords}
                assert isinstance(flags.get("weights_only"), ast.Constant) and flags["weights_only"].value is True, \
                    f"{path}:{node.lineno}: torch.load without weights_only=True"
                loads.append(f"{path.name}:{node.lineno}")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(n.split(".")[0] in ("pickle", "dill", "cloudpickle") for n in names), \
                    f"{path}:{node.lineno}: imports pickle"
    assert loads, "expected hf_io's torch.load of pytorch_model.bin"
