"""Reading the model of any directory ``--model`` may name (``artifacts.open_dir`` says which kind it is):
a pre-training run, a fine-tuned task dir or a Hugging Face checkpoint dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from electrolite import config as cfgmod
from electrolite.artifacts import HFDir, RunDir, TaskDir, expect, open_dir
from electrolite.config import EncoderConfig, PretrainConfig
from electrolite.data.tokenizer import load_tokenizer
from electrolite.errors import UserError
from electrolite.interop import hf_io
from electrolite.objectives import Electra, MaskedLM, build_objective
from electrolite.tasks.model import LoadedEncoder, TaskModel
from electrolite.training import checkpoint


def load_encoder(path: str, action: str = "finetune") -> LoadedEncoder:
    """Read the encoder from a pre-training run, a task dir or a Hugging Face checkpoint dir (`action`, e.g.
    "finetune" or "pretrain --init", names the command in the error for anything else)."""
    art = expect(open_dir(path), (RunDir, TaskDir, HFDir),
                 f"{action} needs a pre-training run, a fine-tuned task dir or a Hugging Face checkpoint")
    if isinstance(art, TaskDir):
        return _load_task_dir_encoder(art.root, art.data)
    if isinstance(art, RunDir):
        return _load_pretrain_encoder(art.root, art.config())
    return hf_io.load_hf_encoder(art.root)


def load_pretrain_objective(root: Path, cfg: PretrainConfig) -> MaskedLM | Electra:
    """The whole pre-training objective module of a run (generator, discriminator, heads), weights loaded."""
    weights = root / "model.safetensors"
    if not weights.exists():
        raise UserError(f"{root}: the run has no model.safetensors yet (pre-train at least one checkpoint)")
    model = build_objective(cfg.model, cfg.objective, cfg.generator_config())
    checkpoint.load_weights(model, weights)
    return model.eval()


def _load_pretrain_encoder(root: Path, cfg: PretrainConfig) -> LoadedEncoder:
    model = load_pretrain_objective(root, cfg)
    encoder = cast(Electra, model).discriminator if cfg.objective.name == "electra" else cast(MaskedLM, model).encoder
    state = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    if cfg.objective.name == "electra":
        family = "electra"
    else:  # masked LM: ALBERT's when it learned sentence order or shares its layers
        family = "albert" if cfg.objective.sop or cfg.model.num_hidden_groups < cfg.model.num_hidden_layers else "bert"
    return LoadedEncoder(cfg.model, state, load_tokenizer(str(root / "tokenizer.json")),
                         cfgmod.CHECKPOINT_HEADS[family], "pretrain-run", family=family)


def task_dir_parts(data: dict[str, Any], path: str | Path = "config.yaml") -> tuple[EncoderConfig, dict[str, Any]]:
    """(encoder config, task record) from a task dir's config.yaml mapping.

    Raises:
        UserError: the mapping lacks what loading the model needs (naming ``path``, the file it came from).
    """
    encoder, record = data.get("encoder"), data.get("task_model")
    if not isinstance(encoder, dict) or not isinstance(record, dict):
        raise UserError(f"{path}: not the config of a fine-tuned task dir (no encoder and task_model mappings)")
    labels = record.get("labels")
    if (record.get("family") not in ("classification", "regression", "tagging", "qa")
            or record.get("head") not in ("electra", "pooler")
            or not (labels is None or isinstance(labels, list) and all(isinstance(x, str) for x in labels))):
        raise UserError(f"{path}: task_model needs family (classification, regression, tagging or qa), "
                        "head (electra or pooler) and a list of labels")
    try:
        return cfgmod.build(EncoderConfig, encoder, "encoder"), record
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


def _load_task_dir_encoder(root: Path, data: dict[str, Any]) -> LoadedEncoder:
    model, record = load_task_model(root, data)
    state = {k: v.detach().clone() for k, v in model.encoder.state_dict().items()}
    enc_cfg, _ = task_dir_parts(data, root / "config.yaml")
    family = record.get("checkpoint_family") or ("electra" if record["head"] == "electra" else "bert")  # older dirs
    return LoadedEncoder(enc_cfg, state, load_tokenizer(str(root / "tokenizer.json")), record["head"],
                         "task-dir", data, family=family)


def load_task_model(root: Path, data: dict[str, Any] | None = None) -> tuple[TaskModel, dict[str, Any]]:
    """A fine-tuned task dir's model (eval mode) and its task record (task, family, labels, head)."""
    if data is None:
        data = expect(open_dir(root), (TaskDir,), "this needs a fine-tuned task dir").data
    enc_cfg, record = task_dir_parts(data, root / "config.yaml")
    if not (root / "model.safetensors").is_file():  # before building a model of whatever size the file says
        raise UserError(f"{root / 'model.safetensors'}: no such weights file")
    labels = record.get("labels") or []
    model = TaskModel(enc_cfg, record["family"], len(labels), record["head"])
    checkpoint.load_weights(model, root / "model.safetensors")
    return model.eval(), record
