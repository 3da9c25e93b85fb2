"""Atomic, resumable checkpoints: safetensors for tensors, JSON for the rest, never pickle.

Layout of RUN/checkpoints/::

    step-00001000/model.safetensors      every parameter (shared tensors stored once)
    step-00001000/optimizer.safetensors  AdamW moments and step counts, by parameter name
    step-00001000/rng.safetensors        torch CPU/CUDA RNG and the masking generator's state
    step-00001000/state.json             step, data position, elapsed time, FLOPs, file checksums
    latest                               name of the newest complete checkpoint

A checkpoint is written under a temporary name, fsynced, renamed, and only then does
``latest`` move to it; older ones beyond ``keep_last`` are removed after that. A write that fails
(disk full, no permission) removes what it wrote and leaves ``latest`` where it was; what a killed
process left (temporary names, a checkpoint that ``latest`` never reached) is removed by the next save.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterator, cast

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from electrolite.errors import UserError

FORMAT_VERSION = 1
CHECKPOINT_FILES = ("model.safetensors", "optimizer.safetensors", "rng.safetensors")  # each checksummed in state.json


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


# safetensors reports a failed write as SafetensorError("... I/O error: ... (os error 28) ..."), or with
# the Rust debug form "Os { code: 28, ... }" in older releases.
_OS_ERROR = re.compile(r"os error (\d+)|Os \{ code: (\d+)")


class StateDict(dict):
    """A model's full state dict written as its module would be: a tensor that several names share
    (the same tensor object, as ``Module.state_dict`` gives a shared module's) is stored once, under
    the name safetensors' ``save_model`` keeps, with the others in the metadata. What a sharded model
    gathers (``sharding.gather_weights``) is one, so its files are those of the unsharded model."""

    def state_dict(self) -> dict[str, torch.Tensor]:  # all that save_model reads of a module
        return dict(self)


def _write_safetensors(tensors: nn.Module | StateDict | dict[str, torch.Tensor], path: Path,
                       metadata: dict[str, str] | None = None) -> None:
    """The one place a checkpoint's tensors are written: a module or StateDict (shared tensors once) or a dict.

    A write that fails in the OS (disk full, no permission, read-only file system) raises the
    OSError it was, with its errno, whatever safetensors wraps it in.
    """
    try:
        if isinstance(tensors, (nn.Module, StateDict)):
            # safetensors annotates a Module, but reads only .state_dict(), which StateDict has
            save_model(tensors, str(path), metadata=metadata)  # type: ignore[arg-type]
        else:
            save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as e:
        m = _OS_ERROR.search(str(e))
        if m is None:
            raise
        code = int(m.group(1) or m.group(2))
        raise OSError(code, os.strerror(code), str(path)) from None


def _write_bytes(path: Path, data: bytes) -> None:
    """The one place a checkpoint's small files (state.json, latest, summary.json) are written: write, fsync."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(data: Any, path: Path) -> None:
    """Write JSON atomically (temp file, fsync, rename).

    A write the OS refuses is a UserError naming the path; `path` stays as it was, no temp file is left.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        _write_bytes(tmp, json.dumps(data, indent=1).encode("utf-8"))
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None


def check_new_dir(out: Path, name: str = "OUT") -> None:
    """A UserError unless `out` is missing or an empty directory: an export never overwrites anything.

    Args:
        out: the directory about to be written.
        name: how the command line calls it, for the message.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not empty; choose a new {name} (nothing was overwritten)")


@contextlib.contextmanager
def atomic_dir(out: Path) -> Iterator[Path]:
    """A fresh temporary directory next to `out`, renamed to `out` when the block ends.

    If the block raises, the temporary directory is removed and `out` is left as it was.
    `out` must be missing or empty (``check_new_dir``).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            out.rmdir()
        tmp.replace(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_weights(model: nn.Module | StateDict, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Save a module's parameters and buffers (or a sharded one's, gathered) to safetensors atomically
    (shared tensors once).

    A write the OS refuses is a UserError naming the path; `path` stays as it was, no temp file is left.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        _write_safetensors(model, tmp, metadata)
        _fsync_file(tmp)
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None


def publish_weights(ck: Path, path: Path) -> None:
    """Copy a checkpoint's model.safetensors to `path` (RUN/model.safetensors) atomically.

    A write the OS refuses is a UserError naming the path and the checkpoint, which is complete and
    `latest`; `path` stays as it was, no temp file is left.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        shutil.copyfile(ck / "model.safetensors", tmp)
        _fsync_file(tmp)
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {e.strerror or e}; the last good checkpoint is {ck.name}") from None


def load_weights(model: nn.Module, path: Path) -> None:
    """Load safetensors weights into a module; missing, unexpected or corrupt tensors are a UserError."""
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except FileNotFoundError:
        raise UserError(f"{path}: no such weights file") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{path}: corrupt or truncated weights ({e})") from None
    except RuntimeError as e:
        raise UserError(f"{path}: weights do not fit this model ({str(e).splitlines()[0]})") from None
    if missing or unexpected:
        raise UserError(f"{path}: weights do not fit this model (missing: {', '.join(missing) or '-'}; "
                        f"unexpected: {', '.join(unexpected) or '-'})")


def optimizer_tensors(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimizer's state as optimizer.safetensors holds it: ``<parameter name>::<key>`` (exp_avg,
    exp_avg_sq, step), a shared parameter under its first name in ``model.named_parameters()``."""
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                t = value if torch.is_tensor(value) else torch.tensor(value)
                out[f"{names[id(p)]}::{key}"] = t.detach().contiguous().cpu()
    return out


def _load_optimizer_tensors(model: nn.Module, optimizer: torch.optim.Optimizer,
                            tensors: dict[str, torch.Tensor]) -> None:
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            prefix = names[id(p)] + "::"
            state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            if not state:
                continue
            for k, v in state.items():
                # `step` stays on CPU for AdamW unless fused/capturable put it on the param's device.
                state[k] = v.to(p.device) if v.ndim > 0 or getattr(optimizer, "defaults", {}).get("fused") else v
            optimizer.state[p] = state


def _latest_name(ckdir: Path) -> str | None:
    try:
        return (ckdir / "latest").read_text().strip() or None
    except OSError:
        return None


def remove_stale_temps(run_dir: Path) -> None:
    """Remove what a killed writer left: temporary checkpoint dirs and files, and checkpoints that
    ``latest`` never reached (newer than it). Only one process writes a run's checkpoints."""
    ckdir = run_dir / "checkpoints"
    latest = _latest_name(ckdir)
    stale = [*ckdir.glob(".tmp-step-*"), *ckdir.glob(".latest.tmp-*"),
             *run_dir.glob(".*.tmp-*"), *run_dir.glob(".*.tmp")]
    stale += [p for p in ckdir.glob("step-*") if latest is None or p.name > latest]
    for p in stale:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def save_checkpoint(run_dir: Path, step: int, model: nn.Module | StateDict,
                    optimizer: torch.optim.Optimizer | dict[str, torch.Tensor], rng: dict[str, torch.Tensor],
                    state: dict[str, Any], keep_last: int) -> Path:
    """Write RUN/checkpoints/step-NNNNNNNN atomically and point `latest` at it.

    A write the OS refuses (disk full, no permission ...) is a UserError naming the path, the error and
    the last good checkpoint; what was written is removed and `latest` still names the previous one.

    Args:
        run_dir: the run directory.
        step: optimizer steps done.
        model: the objective module (all of its weights are saved), or a sharded one's gathered
            StateDict (``sharding.gather_weights``).
        optimizer: its optimizer, or its state gathered from the shards (``sharding.gather_optimizer``;
            ``optimizer_tensors`` names).
        rng: named RNG states (uint8 tensors).
        state: JSON-able resume state (data position, elapsed time, FLOPs ...).
        keep_last: complete checkpoints to keep.
    """
    ckdir = run_dir / "checkpoints"
    name = f"step-{step:08d}"
    tmp = ckdir / f".tmp-{name}-{os.getpid()}"
    final = ckdir / name
    latest_tmp = ckdir / f".latest.tmp-{os.getpid()}"
    previous = _latest_name(ckdir)
    moved = False  # `final` holds this checkpoint, but `latest` does not name it yet
    try:
        ckdir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(run_dir)
        tmp.mkdir()
        # RUN/model.safetensors is a copy of this file (publish_weights): the step goes in its metadata.
        _write_safetensors(model, tmp / "model.safetensors", {"step": str(step)})
        # an optimizer comes with its module; a StateDict (gathered shards) with gathered moments
        moments = optimizer if isinstance(optimizer, dict) else optimizer_tensors(cast(nn.Module, model), optimizer)
        _write_safetensors(moments, tmp / "optimizer.safetensors")
        _write_safetensors({k: v.contiguous() for k, v in rng.items()}, tmp / "rng.safetensors")
        for f in CHECKPOINT_FILES:
            _fsync_file(tmp / f)
        full = dict(state, format_version=FORMAT_VERSION, step=step,
                    checksums={f: sha256(tmp / f) for f in CHECKPOINT_FILES})
        _write_bytes(tmp / "state.json", json.dumps(full, indent=1).encode("utf-8"))
        _fsync_dir(tmp)
        if final.exists():  # not `latest` (a run saves each step once, after it): an abandoned copy
            shutil.rmtree(final)
        tmp.rename(final)
        moved = True
        _fsync_dir(ckdir)
        _write_bytes(latest_tmp, (name + "\n").encode("utf-8"))
        latest_tmp.replace(ckdir / "latest")
        moved = False
        _fsync_dir(ckdir)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        latest_tmp.unlink(missing_ok=True)
        if moved:
            shutil.rmtree(final, ignore_errors=True)
        if not isinstance(e, OSError):
            raise
        good = f"the last good checkpoint is {previous}" if previous else "no checkpoint was written before it"
        raise UserError(f"cannot write checkpoint {name}: {e.strerror or e} ({e.filename or ckdir}); {good}"
                        ) from None
    complete = sorted(p for p in ckdir.glob("step-*") if p.is_dir())
    for old in complete[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    ckdir = run_dir / "checkpoints"
    pointer = ckdir / "latest"
    if not pointer.exists():
        return None
    path = ckdir / pointer.read_text().strip()
    if not (path / "state.json").exists():
        raise UserError(f"{pointer} names {path.name}, which is not a complete checkpoint")
    return path


def verify_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's state.json, once every file it lists matches its SHA-256.

    A missing, truncated or corrupted file, or a state.json without a checksum for one of them, is a
    UserError: a damaged checkpoint is reported, never loaded.
    """
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path / 'state.json'}: unreadable checkpoint state ({e})") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        version = state.get("format_version") if isinstance(state, dict) else None
        raise UserError(f"{path}: checkpoint format {version} is not {FORMAT_VERSION}")
    checksums = state.get("checksums")
    for f in CHECKPOINT_FILES:
        if not isinstance(checksums, dict) or not isinstance(checksums.get(f), str):
            raise UserError(f"{path / 'state.json'}: no checksum for {f}, the checkpoint is incomplete")
        if not (path / f).is_file() or sha256(path / f) != checksums[f]:
            raise UserError(f"{path / f}: checksum mismatch, the checkpoint is truncated or corrupted")
    return state


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None
                    ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Verify checksums (``verify_checkpoint``) and load weights (+ optimizer). Returns (state, rng tensors).

    A model sharded by FSDP loads through ``sharding.restore``, which calls this for any other.
    """
    state = verify_checkpoint(path)
    load_weights(model, path / "model.safetensors")
    if optimizer is not None:
        _load_optimizer_tensors(model, optimizer, load_file(str(path / "optimizer.safetensors")))
    return state, load_file(str(path / "rng.safetensors"))
