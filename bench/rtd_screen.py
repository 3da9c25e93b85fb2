"""Screen ELECTRA recipes cheaply (issue: ELECTRA that pays off on small budgets; not a test).

    python bench/rtd_screen.py BASE.yaml --out screen NAME=OVERRIDES [NAME=OVERRIDES ...]

Each variant is pre-trained with BASE.yaml plus its dotted overrides (`--objective.generator_lr_scale 0.1
--train.learning_rate 3e-4`, space-separated after the `=`), then measured as STUDY.md's screen asks:

- over the steps: validation RTD AUC and its loss against the all-original prior (from metrics.jsonl);
- at the end: the last-layer cosine between different tokens (bench/representations.py);
- one seed of SST-2 (first 8,000 training sentences) and CoNLL-2003 (first 5,000), fine-tuned as the study does.

Every step is resumable: a variant's run, representations and task dirs are reused when present. One JSON
line per variant is appended to OUT/screen.jsonl. Run one process per core (OMP_NUM_THREADS=1) with
different variants to screen two at a time.

    python bench/rtd_screen.py --plot PNG RUN [RUN ...]

draws the runs' validation AUC and RTD loss − prior against paper FLOPs (needs matplotlib).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from electrolite.objectives import prior_rtd_loss

TASKS = [("sst2", "glue/SST-2", "8000"), ("conll2003", "conll2003", "5000")]


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def curve(metrics: Path) -> list[dict]:
    """Validation points: step, AUC, loss − prior, generator MLM accuracy."""
    out = []
    for line in metrics.read_text().splitlines():
        r = json.loads(line)
        if "valid_rtd_auc" in r:
            out.append({"step": r["step"], "auc": round(r["valid_rtd_auc"], 4),
                        "loss_minus_prior": round(r["valid_rtd_loss"] - prior_rtd_loss(r["valid_replaced_fraction"]), 4),
                        "mlm_acc": round(r.get("valid_mlm_accuracy", float("nan")), 4)})
    return out


def plot(png: str, runs: list[str]) -> None:
    import matplotlib  # optional: the report extra
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run in runs:
        rows = [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]
        rows = [r for r in rows if "valid_rtd_auc" in r]
        x = [r["paper_flops"] for r in rows]
        a.plot(x, [r["valid_rtd_auc"] for r in rows], marker="o", ms=3, label=Path(run).name)
        b.plot(x, [r["valid_rtd_loss"] - prior_rtd_loss(r["valid_replaced_fraction"]) for r in rows], marker="o", ms=3)
    a.axhline(0.5, color="grey", lw=0.8, ls=":")
    a.axhline(0.8, color="grey", lw=0.8, ls="--")
    b.axhline(0.0, color="grey", lw=0.8, ls=":")
    a.set(xlabel="paper FLOPs", ylabel="validation RTD AUC", title="replaced-token detection AUC (0.5: chance)")
    b.set(xlabel="paper FLOPs", ylabel="RTD loss − all-original prior", title="loss against the prior (below 0: learning)",
          ylim=(-0.2, 0.05))
    a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--plot":
        plot(sys.argv[2], sys.argv[3:])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base")
    p.add_argument("variants", nargs="+", help="NAME=--dotted.key value ...")
    p.add_argument("--out", required=True)
    p.add_argument("--data", default=os.environ.get("ELECTROLITE_DATA", "../shared/data"))
    p.add_argument("--no-finetune", action="store_true")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    exe = str(Path(sys.executable).with_name("electrolite"))
    for spec in args.variants:
        name, _, overrides = spec.partition("=")
        run_dir = out / name
        if not (run_dir / "summary.json").exists() or json.loads((run_dir / "summary.json").read_text())["step"] < \
                json.loads((run_dir / "summary.json").read_text())["steps"]:
            run([exe, "pretrain", "--config", args.base, "--out", str(run_dir), "--train.progress", "false",
                 *overrides.split()])
        rep = out / f"{name}.representations.json"
        if not rep.exists():
            run([sys.executable, str(Path(__file__).with_name("representations.py")), str(run_dir), "--json", str(rep)])
        stats = next(iter(json.loads(rep.read_text()).values()))
        row = {"name": name, "overrides": overrides, "curve": curve(run_dir / "metrics.jsonl"),
               "last_layer_cos": round(stats[-1]["cos"], 3)}
        if not args.no_finetune:
            for task, data, n in TASKS:
                task_dir = out / f"{name}.{task}"
                if not (task_dir / "eval_results.json").exists():
                    run([exe, "finetune", "--model", str(run_dir), "--task", task, "--data", f"{args.data}/{data}",
                         "--max-train-examples", n, "--out", str(task_dir), "--seed", "0", "--no-progress"])
                row[task] = round(json.loads((task_dir / "eval_results.json").read_text())["main"], 4)
        print(json.dumps(row), flush=True)
        with open(out / "screen.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
