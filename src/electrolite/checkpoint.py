"""Atomic, resumable checkpoints: safetensors for tensors, JSON for the rest, never pickle.

Layout of RUN/checkpoints/::

    step-00001000/model.safetensors      every parameter (shared tensors stored once)
    step-00001000/optimizer.safetensors  AdamW moments and step counts, by parameter name
    step-00001000/rng.safetensors        torch CPU/CUDA RNG and the masking generator's state
    step-00001000/state.json             step, data position, elapsed time, FLOPs, file checksums
    latest                               name of the newest complete checkpoint

A checkpoint is written under a temporary name, fsynced, renamed, and only then does
``latest`` move to it; older ones beyond ``keep_last`` are removed after that.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from electrolite.errors import UserError

FORMAT_VERSION = 1


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


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(data: Any, path: Path) -> None:
    """Write JSON atomically (temp file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


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


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Save a module's parameters and buffers to safetensors atomically (shared tensors once)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_model(model, str(tmp), metadata=metadata)
    _fsync_file(tmp)
    tmp.replace(path)


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


def _optimizer_tensors(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
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


def save_checkpoint(run_dir: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    rng: dict[str, torch.Tensor], state: dict[str, Any], keep_last: int) -> Path:
    """Write RUN/checkpoints/step-NNNNNNNN atomically and point `latest` at it.

    Args:
        run_dir: the run directory.
        step: optimizer steps done.
        model: the objective module (all of its weights are saved).
        optimizer: its optimizer.
        rng: named RNG states (uint8 tensors).
        state: JSON-able resume state (data position, elapsed time, FLOPs ...).
        keep_last: complete checkpoints to keep.
    """
    ckdir = run_dir / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    tmp = ckdir / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        save_model(model, str(tmp / "model.safetensors"))
        save_file(_optimizer_tensors(model, optimizer), str(tmp / "optimizer.safetensors"))
        save_file({k: v.contiguous() for k, v in rng.items()}, str(tmp / "rng.safetensors"))
        files = ["model.safetensors", "optimizer.safetensors", "rng.safetensors"]
        for f in files:
            _fsync_file(tmp / f)
        full = dict(state, format_version=FORMAT_VERSION, step=step,
                    checksums={f: sha256(tmp / f) for f in files})
        write_json(full, tmp / "state.json")
        _fsync_dir(tmp)
        final = ckdir / name
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        _fsync_dir(ckdir)
        latest_tmp = ckdir / f".latest.tmp-{os.getpid()}"
        latest_tmp.write_text(name + "\n")
        _fsync_file(latest_tmp)
        latest_tmp.replace(ckdir / "latest")
        _fsync_dir(ckdir)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"cannot write checkpoint in {ckdir}: {e.strerror or e} "
                        f"(the previous checkpoint is intact)") from None
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


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None
                    ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Verify checksums and load weights (+ optimizer). Returns (state, rng tensors)."""
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path / 'state.json'}: unreadable checkpoint state ({e})") from None
    if state.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path}: checkpoint format {state.get('format_version')} is not {FORMAT_VERSION}")
    for f, digest in state.get("checksums", {}).items():
        if not (path / f).exists() or sha256(path / f) != digest:
            raise UserError(f"{path / f}: checksum mismatch, the checkpoint is truncated or corrupted")
    load_weights(model, path / "model.safetensors")
    if optimizer is not None:
        _load_optimizer_tensors(model, optimizer, load_file(str(path / "optimizer.safetensors")))
    return state, load_file(str(path / "rng.safetensors"))
