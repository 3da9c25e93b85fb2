"""Fine-tuning recipe: setup → loop (epochs) → evaluate → keep the best → cleanup.

Launch::

    electrolite finetune --model RUN --task sst2 --data ../shared/data/glue/SST-2 --out TASKDIR

ELECTRA's defaults: layer-wise LR decay 0.8, 10% warm-up then linear decay, AdamW ε 1e-6,
weight decay 0.01, batch 32, max length 128 (QA 384 / stride 128), 3 epochs (10 for RTE and
STS-B, 2 for SQuAD). Batches are bucketed by length, so little compute goes to padding.
A task dir holds config.yaml, tokenizer.json, model.safetensors (the best epoch),
metrics.jsonl, eval_results.json and predictions-<split>.jsonl. ``--seeds N`` fine-tunes N
times into TASKDIR/seed-<s>/ and writes the median and spread to TASKDIR/results.json.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from electrolite import config as cfgmod
from electrolite.config import FinetuneConfig
from electrolite.data.tokenizer import special_tokens
from electrolite.errors import UserError
from electrolite.interop.load import load_encoder
from electrolite.tasks import Task, TaskData, get_task
from electrolite.tasks.model import from_scratch, layer_depths, new_task_model
from electrolite.tasks.predict import score, to_tensors
from electrolite.training import checkpoint, sharding
from electrolite.training.loop import TrainState, train_step
from electrolite.training.optim import adamw, linear_schedule, param_groups, set_lr
from electrolite.training.runtime import (
    Dist,
    broadcast,
    init_distributed,
    maybe_compile,
    resolve_device,
    resolve_precision,
    shutdown,
    wrap_data_parallel,
)


def resolve_task(cfg: FinetuneConfig) -> Task:
    task = get_task(cfg.task)
    if task.name == "text-classification":
        cols = [c.strip() for c in cfg.text_columns.split(",") if c.strip()] or None
        task = task.with_options(cols, cfg.label_column or None, cfg.regression)
    elif cfg.text_columns or cfg.label_column or cfg.regression:
        task.with_options(cfg.text_columns.split(","), cfg.label_column or None, cfg.regression or None)
    if cfg.max_length:
        task = dataclasses.replace(task, max_length=cfg.max_length)
    return task


def bucket_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, chunk: int = 64) -> list[np.ndarray]:
    """Shuffled batches of similar length: shuffle, sort within chunks of `chunk` batches, shuffle the batches."""
    order = rng.permutation(len(lengths))
    batches = []
    span = batch_size * chunk
    for start in range(0, len(order), span):
        part = order[start:start + span]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def shuffled_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Uniformly shuffled batches (as a DataLoader with shuffle=True): any lengths share a batch."""
    order = rng.permutation(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def _write_jsonl(rows: Sequence[dict], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def run_one(cfg: FinetuneConfig, out: Path, task: Task, data: TaskData, loaded, dist: Dist = Dist()
            ) -> dict[str, Any]:
    """Fine-tune one seed into `out`; returns the best epoch's results (rank 0; other ranks only train).

    Under torchrun every rank takes every world_size-th length-bucketed batch and DDP averages the
    gradients; rank 0 alone evaluates and writes. Under FSDP (``cfg.parallel``) every rank evaluates,
    as the sharded forward needs them all, and rank 0 alone writes.
    """
    # --- setup ---------------------------------------------------------------------------------
    device = resolve_device(cfg.device, dist)
    precision = resolve_precision(cfg.precision, device)  # config.yaml keeps cfg.precision as given
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    tok = loaded.tokenizer
    pad_id = special_tokens(tok).pad_token_id
    labels = list(data.labels) if data.labels else []
    train = data.train[:cfg.max_train_examples] if cfg.max_train_examples else data.train
    if not train:
        raise UserError(f"{cfg.task}: no training examples")
    train_features = task.encode(train, tok, labels or None, training=True)
    evals = {split: (examples, task.encode(examples, tok, labels or None)) for split, examples in data.evals.items()}
    recipe = cfg.resolved_recipe(loaded.family)
    model = new_task_model(loaded, task.family, len(labels), task.max_length, cfg.head).to(device)
    compiled = maybe_compile([model.encoder], cfg.compile, device)
    if dist.rank:  # each rank its own dropout stream (rank 0: the single-process one)
        torch.manual_seed(cfg.seed + 1_000_003 * dist.rank)
    trained = wrap_data_parallel(model, dist, device, cfg.parallel)  # FSDP: `model` itself, sharded
    sharded = sharding.is_sharded(model)
    hidden = loaded.config.hidden_size
    lr = cfg.resolved_learning_rate(hidden)
    decay = cfg.resolved_layer_decay(hidden, loaded.family)
    depths, top = layer_depths(model)
    groups = param_groups(model, cfg.weight_decay, lr, {n: decay ** (top - d) for n, d in depths.items()})
    optimizer = adamw(groups, lr, (0.9, 0.999), recipe["adam_epsilon"], device)
    epochs = cfg.epochs or task.epochs
    accumulation = cfg.gradient_accumulation_steps
    # optimizer steps per epoch: each takes `accumulation` micro-batches on every rank
    per_epoch = math.ceil(len(train_features) / cfg.batch_size) // (dist.world_size * accumulation)
    if per_epoch == 0:
        raise UserError(f"{cfg.task}: {len(train_features)} training examples are too few for batches of "
                        f"{cfg.batch_size} × {accumulation} accumulated on {dist.world_size} processes")
    total = epochs * per_epoch
    warmup = int(cfg.warmup_fraction * total)
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
    record = {"task": task.name, "family": task.family, "labels": labels,
              "head": getattr(model.head, "kind", loaded.head),  # tagging and QA heads have one layout
              "checkpoint_family": loaded.family,
              "recipe": {**recipe, "learning_rate": lr, "layerwise_lr_decay": decay},
              "text_fields": list(task.text_fields), "label_column": task.label_column, "max_length": task.max_length,
              "doc_stride": task.doc_stride, "max_query_length": task.max_query_length,
              "max_answer_length": task.max_answer_length, "source": loaded.source, "note": data.note}
    if dist.is_main:
        cfgmod.save_yaml({"finetune": cfgmod.to_dict(dataclasses.replace(cfg, seeds=1)),
                          "encoder": cfgmod.to_dict(loaded.config), "task_model": record}, out / "config.yaml")
        tok.save(str(out / "tokenizer.json"))
    metrics_file = open(out / "metrics.jsonl" if dist.is_main else os.devnull, "w", encoding="utf-8")
    main_split = next(iter(evals))
    best: dict[str, Any] = {}
    state = TrainState()
    started = time.perf_counter()

    def compute(idx: np.ndarray) -> tuple[torch.Tensor, dict[str, float]]:
        loss = trained(to_tensors(train_features.batch(idx, pad_id), device))["loss"]
        return loss, {"loss": loss.item()}

    # --- loop ----------------------------------------------------------------------------------
    bar = tqdm(total=total, disable=not (cfg.progress and dist.is_main), desc=f"{task.name} seed {cfg.seed} {precision}",
               unit="step")
    for epoch in range(1, epochs + 1):
        model.train()
        if recipe["batch_order"] == "bucketed":  # the same list on every rank
            batches = bucket_batches(train_features.lengths, cfg.batch_size, rng)
        else:
            batches = shuffled_batches(len(train_features), cfg.batch_size, rng)
        mine = batches[dist.rank:per_epoch * dist.world_size * accumulation:dist.world_size]  # this rank's
        for first in range(0, per_epoch * accumulation, accumulation):
            set_lr(optimizer, lr, linear_schedule(state.step, warmup, total))
            tick = time.perf_counter()
            result = train_step(trained, optimizer, mine[first:first + accumulation], compute, accumulation, device,
                                precision, cfg.max_grad_norm, dist)
            state.count(result, time.perf_counter() - tick)
            bar.update(1)
            if state.diverged(cfg.max_nonfinite_steps):
                raise UserError(f"{out}: stopped: {state.nonfinite} non-finite steps in a row at step {state.step} "
                                f"(loss {result.metrics['loss']:g}); the best epoch so far is in model.safetensors"
                                if best else f"{out}: stopped: {state.nonfinite} non-finite steps in a row at step "
                                f"{state.step} (loss {result.metrics['loss']:g}), before any epoch ended",
                                every_rank=dist.enabled)
            if state.step % 20 == 0:
                loss = result.metrics["loss"]
                bar.set_postfix(loss=f"{loss:.4f}")
                metrics_file.write(json.dumps({"step": state.step, "epoch": epoch, "loss": round(loss, 6),
                                               "lr": optimizer.param_groups[0]["lr"],
                                               "skipped_steps": state.skipped}) + "\n")
        # --- evaluate, keep the best ---------------------------------------------------------------
        if not (dist.is_main or sharded):
            continue
        results, predictions = {}, {}
        for split, (examples, features) in evals.items():
            results[split], predictions[split] = score(task, model, examples, features, labels, pad_id,
                                                       cfg.batch_size * 2, device, precision)
        metrics_file.write(json.dumps({"step": state.step, "epoch": epoch, **{
            f"{s}_{k}": round(v, 6) for s, r in results.items() for k, v in r.items()}}) + "\n")
        metrics_file.flush()
        main = results[main_split][task.main_metric]
        better = not best or main > best["main"]
        if sharded:  # rank 0's decision on every rank: all of them gather the weights (a collective) or none
            better = broadcast(dist, better)
        if better:
            best = {"main": main, "epoch": epoch, "results": results}
            weights = sharding.gather_weights(model)  # FSDP: to rank 0's CPU; DDP, one process: the module
            if dist.is_main:
                checkpoint.save_weights(weights, out / "model.safetensors")
                for split, rows in predictions.items():
                    _write_jsonl(rows, out / f"predictions-{split}.jsonl")
    bar.close()
    metrics_file.close()
    if not dist.is_main:
        return {"seed": cfg.seed}
    summary = {"task": task.name, "seed": cfg.seed, "best_epoch": best["epoch"], "epochs": epochs,
               "main_metric": f"{main_split}_{task.main_metric}", "main": best["main"],
               "results": best["results"], "train_examples": len(train), "steps": state.step,
               "skipped_steps": state.skipped, "gradient_accumulation_steps": accumulation,
               "seconds": round(time.perf_counter() - started, 1), "precision": precision, "compiled": compiled,
               "world_size": dist.world_size, "global_batch": cfg.batch_size * accumulation * dist.world_size,
               "recipe": record["recipe"],
               "note": data.note}
    checkpoint.write_json(summary, out / "eval_results.json")
    return summary


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and spread of every metric over seeds (the papers report medians)."""
    table: dict[str, list[float]] = {}
    for r in runs:
        for split, metrics in r["results"].items():
            for k, v in metrics.items():
                table.setdefault(f"{split}_{k}", []).append(float(v))
    return {k: {"median": statistics.median(v), "min": min(v), "max": max(v),
                "std": statistics.pstdev(v) if len(v) > 1 else 0.0, "values": v} for k, v in table.items()}


def run(cfg: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune (cfg.seeds times) and return the results."""
    if not cfg.model or not cfg.out or not cfg.task:
        raise UserError("finetune needs --model, --task and --out")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory; choose a new --out (nothing was overwritten)")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; choose a new --out (nothing was overwritten)")
    task = resolve_task(cfg)
    data = task.load(cfg.data or None, train=cfg.train_file or None, dev=cfg.dev_file or None)
    loaded = load_encoder(cfg.model)
    if cfg.from_scratch:
        loaded = from_scratch(loaded, cfg.seed)
    dist = init_distributed(cfg.device)
    if data.note and dist.is_main:
        print(f"note: {data.note}")
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists() and dist.is_main:
        shutil.rmtree(tmp)
    try:
        if cfg.seeds == 1:
            summary = run_one(cfg, tmp, task, data, loaded, dist)
        else:
            runs = [run_one(dataclasses.replace(cfg, seed=cfg.seed + i, out=str(out / f"seed-{cfg.seed + i}")),
                            tmp / f"seed-{cfg.seed + i}", task, data, loaded, dist)
                    for i in range(cfg.seeds)]
        if not dist.is_main:
            shutdown(dist)
            return {}
        if cfg.seeds > 1:
            summary = {"task": task.name, "seeds": [r["seed"] for r in runs], "main_metric": runs[0]["main_metric"],
                       "median": statistics.median(r["main"] for r in runs), "spread": aggregate(runs),
                       "precision": runs[0]["precision"], "compiled": runs[0]["compiled"], "note": data.note}
            checkpoint.write_json(summary, tmp / "results.json")
        if not out.exists():
            tmp.replace(out)
        else:
            shutil.rmtree(out)
            tmp.replace(out)
    except BaseException:
        if dist.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutdown(dist)
    return summary
