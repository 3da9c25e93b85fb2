"""One door for every directory a command may be given (`--model`, `--init`, `export SRC`, ...).

``open_dir(path)`` recognises what a directory is and returns a typed handle; ``expect`` turns a handle of
the wrong kind into the one error message every command gives. No other module looks at a directory's
files to decide what it is.

| kind | recognised by |
| --- | --- |
| RunDir: a pre-training run | config.yaml without a ``finetune`` section |
| TaskDir: a fine-tuned task dir | config.yaml with a ``finetune`` section and model.safetensors (or none yet) |
| OnnxDir: ``export --format onnx`` | config.yaml and model.onnx, no model.safetensors |
| HFDir: a Hugging Face checkpoint | config.json (no config.yaml) |
| SeedsParent: ``finetune --seeds N`` | seed-*/ task dirs, no config.yaml of its own |
| ExportedElectra: ``export --format hf`` of an ELECTRA run | discriminator/ and generator/ checkpoints |
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union, overload

from electrolite import config as cfgmod
from electrolite.errors import UserError


@dataclass(frozen=True)
class _Dir:
    root: Path
    shown: str = ""
    """How the user named it (for messages)."""

    def __str__(self) -> str:
        return self.shown or str(self.root)


@dataclass(frozen=True)
class RunDir(_Dir):
    """An electrolite pre-training run."""

    data: dict[str, Any] = field(default_factory=dict, compare=False)
    """Its config.yaml."""

    def config(self) -> cfgmod.PretrainConfig:
        """The run's resolved config (a malformed config.yaml is a one-line error naming the file)."""
        try:
            return cfgmod.build(cfgmod.PretrainConfig, self.data)
        except UserError as e:
            raise UserError(f"{self.root / 'config.yaml'}: {e}") from None


@dataclass(frozen=True)
class TaskDir(_Dir):
    """A fine-tuned task dir."""

    data: dict[str, Any] = field(default_factory=dict, compare=False)
    """Its config.yaml: finetune, encoder and task_model sections."""


@dataclass(frozen=True)
class OnnxDir(_Dir):
    """A task model exported with ``export --format onnx``."""


@dataclass(frozen=True)
class HFDir(_Dir):
    """A Hugging Face checkpoint dir (config.json and weights)."""


@dataclass(frozen=True)
class SeedsParent(_Dir):
    """The output of ``finetune --seeds N``: one task dir per seed."""

    seeds: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExportedElectra(_Dir):
    """``export --format hf`` of an ELECTRA run: discriminator/ and generator/ checkpoints."""


Artifact = Union[RunDir, TaskDir, OnnxDir, HFDir, SeedsParent, ExportedElectra]

KIND_NAMES: dict[type, str] = {
    RunDir: "a pre-training run", TaskDir: "a fine-tuned task dir", OnnxDir: "an ONNX export (model.onnx)",
    HFDir: "a Hugging Face checkpoint", SeedsParent: "a multi-seed fine-tuning dir",
    ExportedElectra: "an exported ELECTRA run",
}


def open_dir(path: str | os.PathLike, shown: str | None = None) -> Artifact:
    """What the directory at `path` is (see the module docstring).

    Raises:
        UserError: no such directory, or none of the kinds (one line, naming the path).
    """
    root = Path(path)
    shown = shown or os.fspath(path)
    if not root.is_dir():
        raise UserError(f"{shown}: no such model directory")
    if (root / "config.yaml").is_file():
        data = cfgmod.load_yaml(root / "config.yaml")
        if not isinstance(data, dict):
            raise UserError(f"{root / 'config.yaml'}: expected a mapping")
        if (root / "model.onnx").is_file() and not (root / "model.safetensors").exists():
            return OnnxDir(root, shown)
        return TaskDir(root, shown, data) if "finetune" in data else RunDir(root, shown, data)
    if (root / "config.json").is_file():
        return HFDir(root, shown)
    seeds = tuple(sorted(p.name for p in root.glob("seed-*") if (p / "config.yaml").is_file()))
    if seeds:
        return SeedsParent(root, shown, seeds)
    if (root / "discriminator" / "config.json").is_file() and (root / "generator" / "config.json").is_file():
        return ExportedElectra(root, shown)
    raise UserError(f"{shown} is not a model directory: an electrolite run or task dir has config.yaml, a Hugging "
                    "Face checkpoint config.json")


_A = TypeVar("_A", bound=_Dir)
_B = TypeVar("_B", bound=_Dir)
_C = TypeVar("_C", bound=_Dir)


@overload
def expect(artifact: Artifact, kinds: tuple[type[_A]], needs: str) -> _A: ...
@overload
def expect(artifact: Artifact, kinds: tuple[type[_A], type[_B]], needs: str) -> _A | _B: ...
@overload
def expect(artifact: Artifact, kinds: tuple[type[_A], type[_B], type[_C]], needs: str) -> _A | _B | _C: ...


def expect(artifact: Artifact, kinds: tuple[type[_Dir], ...], needs: str) -> _Dir:
    """`artifact` when it is one of `kinds`; else the one error message: what it is, what `needs` (e.g.
    "predict needs a fine-tuned task dir or a Hugging Face task checkpoint"), and how to get there."""
    if isinstance(artifact, kinds):
        return artifact
    hint = ""
    if isinstance(artifact, SeedsParent):
        hint = f"; pass one of its seeds, e.g. {artifact.root / artifact.seeds[0]}"
    elif isinstance(artifact, ExportedElectra):
        hint = (f"; pass {artifact.root / 'discriminator'} (ElectraForPreTraining) or "
                f"{artifact.root / 'generator'} (ElectraForMaskedLM)")
    elif isinstance(artifact, OnnxDir):
        hint = "; only `predict --runtime onnx` runs it"
    raise UserError(f"{artifact} is {KIND_NAMES[type(artifact)]}; {needs}{hint}")
