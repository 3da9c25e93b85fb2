"""Writing Hugging Face checkpoint directories from a pre-training run, a task dir or another HF dir.

``export_hf`` builds the ``transformers`` class, loads the converted weights strictly and saves it with
``save_pretrained``, so it needs the ``hf`` extra (imported when an export runs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from tokenizers import Tokenizer

from electrolite import config as cfgmod
from electrolite.artifacts import HFDir, RunDir, TaskDir, expect, open_dir
from electrolite.config import EncoderConfig, PretrainConfig
from electrolite.data.tokenizer import load_tokenizer, save_tokenizer
from electrolite.errors import UserError
from electrolite.interop.hf import ARCHITECTURES, WRITTEN_AS, hf_config, mlm_arch, prefixed, task_arch, to_hf
from electrolite.interop.hf_io import load_hf_model, load_hf_tokenizer, task_record
from electrolite.interop.load import load_pretrain_objective, load_task_model, task_dir_parts
from electrolite.objectives import Electra, MaskedLM
from electrolite.tasks import family_of
from electrolite.tasks.model import TaskModel
from electrolite.training.checkpoint import atomic_dir, check_new_dir


@dataclass
class ExportItem:
    """One Hugging Face checkpoint to write."""

    subdir: str
    arch: str
    config: EncoderConfig
    state: dict[str, torch.Tensor]
    tokenizer: Tokenizer
    extra: dict[str, Any]
    """More config.json fields (id2label, label2id, problem_type, electrolite_task)."""
    note: str = ""


def _task_extra(record: dict[str, Any]) -> dict[str, Any]:
    """config.json fields of a task model: its record (read back on import) and its family's label fields."""
    return {"electrolite_task": record, **family_of(record["family"]).hf_fields(list(record.get("labels") or []))}


def _plan_pretrain_run(root: Path, data: dict[str, Any]) -> list[ExportItem]:
    cfg = cfgmod.build(PretrainConfig, data)
    model = load_pretrain_objective(root, cfg)
    tok = load_tokenizer(str(root / "tokenizer.json"))
    if cfg.objective.name == "electra":
        model = cast(Electra, model)  # build_objective's module for the electra objective
        disc, gen = model.discriminator.config, model.generator.config
        for name, c in (("discriminator", disc), ("generator", gen)):
            if c.num_hidden_groups < c.num_hidden_layers:
                raise UserError(f"{root}: the ELECTRA objective on a shared-layer encoder cannot be expressed in "
                                f"transformers: the {name} has num_hidden_groups {c.num_hidden_groups} < "
                                f"num_hidden_layers {c.num_hidden_layers}, and ElectraForPreTraining / "
                                "ElectraForMaskedLM have one set of weights per layer")
        if gen.hidden_act != "gelu":
            raise UserError(f"{root}: the generator's MLM head uses hidden_act {gen.hidden_act}, which cannot be "
                            "expressed: ElectraForMaskedLM's generator head always uses gelu")
        note = ("sop_head not exported: ElectraForPreTraining has no sentence-order head"
                if cfg.objective.sop else "")
        return [
            ExportItem("discriminator", "ElectraForPreTraining", disc,
                       {**prefixed(model.discriminator, "encoder."), **prefixed(model.discriminator_head, "rtd_head.")},
                       tok, {}, note),
            ExportItem("generator", "ElectraForMaskedLM", gen,
                       {**prefixed(model.generator, "encoder."), **prefixed(model.generator_head, "mlm_head.")},
                       tok, {}),
        ]
    model = cast(MaskedLM, model)  # every other objective
    arch = mlm_arch(cfg.model, cfg.objective.sop)
    state = {**prefixed(model.encoder, "encoder."), **prefixed(model.mlm_head, "mlm_head.")}
    if cfg.objective.sop:
        state.update(prefixed(model.sop_head, "sop_head."))
    return [ExportItem("", arch, cfg.model, state, tok, {})]


def _plan(root: Path) -> list[ExportItem]:
    art = expect(open_dir(root), (RunDir, TaskDir, HFDir), "export --format hf needs a pre-training run, a "
                 "fine-tuned task dir or a Hugging Face checkpoint")
    if isinstance(art, RunDir):
        return _plan_pretrain_run(art.root, art.data)
    if isinstance(art, TaskDir):
        model, record = load_task_model(art.root, art.data)
        config, _ = task_dir_parts(art.data)
        arch = task_arch(config, record["family"], record["head"])
        return [ExportItem("", arch, config, model.state_dict(), load_tokenizer(str(root / "tokenizer.json")),
                           _task_extra(record))]
    module, ckpt = load_hf_model(root)
    a = ARCHITECTURES[ckpt.arch]
    extra = _task_extra(task_record(ckpt, cast(TaskModel, module))) if a.family else {}  # build_model: a TaskModel
    return [ExportItem("", WRITTEN_AS.get(ckpt.arch, ckpt.arch), ckpt.config, module.state_dict(),
                       load_hf_tokenizer(root), extra)]


def _require_transformers():
    try:
        import transformers  # optional: the hf extra
    except ImportError:
        raise UserError("export --format hf needs transformers: pip install 'electrolite[hf]'") from None
    return transformers


def write_checkpoint(item: ExportItem, out_dir: Path) -> None:
    """Write one checkpoint with transformers: its class, the converted weights loaded strictly, save_pretrained."""
    transformers = _require_transformers()
    fields = hf_config(item.config, item.arch)
    model_type = fields.pop("model_type")
    hf_cfg = transformers.AutoConfig.for_model(model_type, **fields, **item.extra)
    hf_cfg.architectures = [item.arch]
    log = transformers.utils.logging
    verbosity, bars = log.get_verbosity(), log.is_progress_bar_enabled()
    log.set_verbosity_error()
    log.disable_progress_bar()
    try:
        model = getattr(transformers, item.arch)(hf_cfg)
        model.load_state_dict(to_hf(item.state, item.arch, item.config), strict=True)
        model.save_pretrained(str(out_dir))
    finally:
        log.set_verbosity(verbosity)
        if bars:
            log.enable_progress_bar()
    save_tokenizer(item.tokenizer, str(out_dir), model_max_length=item.config.max_position_embeddings)


def export_hf(src: str | os.PathLike, out: str | os.PathLike) -> list[str]:
    """Export a pre-training run, a fine-tuned task dir or a Hugging Face dir as Hugging Face checkpoint(s).

    An ELECTRA run gives OUT/discriminator (ElectraForPreTraining) and OUT/generator
    (ElectraForMaskedLM); anything else one checkpoint in OUT. Each has config.json,
    model.safetensors and tokenizer files. OUT is written under a temporary name and renamed,
    and an existing non-empty OUT is never touched.

    Returns:
        One line per checkpoint written (and notes on what was left out).
    """
    root, out = Path(src), Path(out)
    if not root.is_dir():
        raise UserError(f"{src}: no such directory")
    check_new_dir(out)
    _require_transformers()
    items = _plan(root)
    lines = []
    with atomic_dir(out) as tmp:
        for item in items:
            target = tmp / item.subdir if item.subdir else tmp
            target.mkdir(parents=True, exist_ok=True)
            write_checkpoint(item, target)
            lines.append(f"wrote {out / item.subdir if item.subdir else out} ({item.arch})")
            if item.note:
                lines.append(f"note: {item.note}")
    return lines
