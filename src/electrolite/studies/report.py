"""``electrolite report``: plots and one markdown page from pre-training runs and studies.

    electrolite report runs/electra-small runs/bert-small studies/books-cpu --out reports/books

Each DIR is a pre-training run (has ``metrics.jsonl``) or a study (has ``results.json``, written by
``electrolite study``, with its runs under ``pretrain/<setup>/``). OUT gets ``report.md``,
``report.json`` (the tables' numbers, for tools and tests) and the PNGs drawn by ``plots.py``:
``curves-<run>.png`` per run, ``compare-curves.png`` for two runs or more, ``score-vs-flops.png`` and
``scores-per-task.png`` when a study is given. Every input is read and checked before anything is
written; OUT is built beside itself under a temporary name and renamed into place, and an existing
OUT is replaced only when it is a previous report.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from electrolite.errors import UserError, parse_json, shown, shown_repr
from electrolite.studies import plots
from electrolite.studies.plots import Run, StudyReport

STUDY_FORMAT, STUDY_VERSION = "electrolite-study", 1
REPORT_FORMAT, REPORT_VERSION = "electrolite-report", 1
EXPECTED = "expected a pre-training run dir (metrics.jsonl) or a study dir (results.json)"
DASH = "–"
# Keys of metrics.jsonl that the report reads; each must be a number where present (NaN allowed).
METRIC_KEYS = ("loss", "paper_flops", "valid_loss", "valid_mlm_accuracy", "valid_rtd_auc", "valid_rtd_accuracy",
               "valid_sop_accuracy")
VALID_SHOWN = (("valid_loss", "loss"), ("valid_mlm_accuracy", "MLM accuracy"), ("valid_rtd_auc", "RTD AUC"),
               ("valid_rtd_accuracy", "RTD accuracy"), ("valid_sop_accuracy", "SOP accuracy"))


# --- reading ------------------------------------------------------------------------------------


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _read_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{file}: not UTF-8 text (byte offset {e.start})") from None
    except OSError as e:
        raise UserError(f"{file}: cannot read ({e.strerror or e})") from None


def read_run(path: Path, name: str) -> Run:
    """Reads a pre-training run dir; a malformed metrics.jsonl line is a UserError naming file and line."""
    file = path / "metrics.jsonl"
    train: list[dict[str, float]] = []
    valid: list[dict[str, float]] = []
    for n, line in enumerate(_read_text(file).splitlines(), 1):
        if not line.strip():
            continue
        record = parse_json(line, f"{file} line {n}")
        if not isinstance(record, dict):
            raise UserError(f"{file} line {n}: expected a JSON object, got {shown_repr(record)}")
        step = record.get("step")
        if not (isinstance(step, int) and not isinstance(step, bool) and step >= 0):
            raise UserError(f"{file} line {n}: step: expected a non-negative integer, got {shown_repr(step)}")
        if "loss" not in record and "valid_loss" not in record:
            continue  # a kind of line this report does not draw
        if "paper_flops" not in record:
            raise UserError(f"{file} line {n}: no paper_flops; expected a pre-training run's metrics line")
        for key in METRIC_KEYS:
            if key in record and not _is_number(record[key]):
                raise UserError(f"{file} line {n}: {key}: expected a number, got {shown_repr(record[key])}")
        kept = {"step": step, **{k: float(record[k]) for k in METRIC_KEYS if k in record}}
        (train if "loss" in record else valid).append(kept)
    if not train and not valid:
        raise UserError(f"{file}: no training or validation lines; expected a pre-training run's metrics")
    run = Run(name, path, train, valid)
    if (path / "config.yaml").is_file():
        try:
            config = yaml.safe_load(_read_text(path / "config.yaml"))
        except yaml.YAMLError as e:
            raise UserError(f"{path / 'config.yaml'}: not YAML ({str(e).splitlines()[0]})") from None
        if isinstance(config, dict):
            objective = config.get("objective")
            if isinstance(objective, dict) and isinstance(objective.get("name"), str):
                run.objective = objective["name"] + ("+sop" if objective.get("sop") is True else "")
            run.size = config["size"] if isinstance(config.get("size"), str) else ""
    return run


class _Checker:
    """Field checks of results.json: each failure is one line naming the file and the field path."""

    KINDS = {"str": (lambda v: isinstance(v, str), "a string"),
             "int": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a non-negative integer"),
             "number": (lambda v: _is_number(v) and math.isfinite(v), "a finite number"),
             "bool": (lambda v: isinstance(v, bool), "true or false"),
             "list": (lambda v: isinstance(v, list), "a list"),
             "dict": (lambda v: isinstance(v, dict), "an object")}

    def __init__(self, file: Path):
        self.file = file

    def get(self, obj: dict, key: str, where: str, kind: str, default: Any = ..., null: bool = False) -> Any:
        path = f"{where}.{key}" if where else key
        if key not in obj:
            if default is ...:
                raise UserError(f"{self.file}: {path}: missing")
            return default
        value = obj[key]
        ok, expected = self.KINDS[kind]
        if not (ok(value) or (null and value is None)):
            raise UserError(f"{self.file}: {path}: expected {expected}{' or null' if null else ''}, "
                            f"got {shown_repr(value)}")
        return value


def read_study(path: Path) -> StudyReport:
    """Reads and checks a study dir's results.json (format_version 1) and its setups' runs."""
    file = path / "results.json"
    data = parse_json(_read_text(file), str(file), document=True)
    if not isinstance(data, dict) or data.get("format") != STUDY_FORMAT:
        found = data.get("format") if isinstance(data, dict) else data
        raise UserError(f"{file}: format: expected {STUDY_FORMAT!r} (results of `electrolite study`), "
                        f"got {shown_repr(found)}")
    c = _Checker(file)
    version = c.get(data, "format_version", "", "int")
    if version != STUDY_VERSION:
        newer = " (written by a newer electrolite?)" if version > STUDY_VERSION else ""
        raise UserError(f"{file}: format_version: expected {STUDY_VERSION}, got {version}{newer}")
    name = c.get(data, "name", "", "str")
    budget = c.get(data, "budget", "", "dict", default={})
    c.get(budget, "text", "budget", "str", default="")
    c.get(data, "seeds", "", "int", default=None)
    tasks = c.get(data, "tasks", "", "list")
    for i, task in enumerate(tasks):
        if not isinstance(task, dict):
            raise UserError(f"{file}: tasks[{i}]: expected an object, got {shown_repr(task)}")
        task["label"] = c.get(task, "label", f"tasks[{i}]", "str", default=c.get(task, "name", f"tasks[{i}]", "str"))
    study = StudyReport(name, path, data)
    for i, setup in enumerate(c.get(data, "setups", "", "list")):
        where = f"setups[{i}]"
        if not isinstance(setup, dict):
            raise UserError(f"{file}: {where}: expected an object, got {shown_repr(setup)}")
        setup["label"] = c.get(setup, "label", where, "str", default=c.get(setup, "name", where, "str"))
        for key, kind in (("pretrained", "bool"), ("steps", "int"), ("paper_flops", "number"), ("complete", "bool")):
            c.get(setup, key, where, kind)
        c.get(setup, "parameters", where, "int", default=None, null=True)
        c.get(setup, "average", where, "number", null=True)
        scores = c.get(setup, "scores", where, "dict")
        for task, entry in scores.items():
            if entry is not None:
                if not isinstance(entry, dict):
                    raise UserError(f"{file}: {where}.scores.{shown(task)}: expected an object, got {shown_repr(entry)}")
                keys = [c.get(entry, k, f"{where}.scores.{shown(task)}", "number", null=True)
                        for k in ("median", "min", "max")]
                scores[task] = None if None in keys else entry  # an entry without a median is a missing cell
        run = c.get(setup, "run", where, "str", default=None, null=True)
        if run is not None:
            if not run or Path(run).is_absolute() or Path(os.path.normpath(run)).parts[0] == "..":
                raise UserError(f"{file}: {where}.run: expected a path inside {path}, got {shown_repr(run)}")
            if (path / run / "metrics.jsonl").is_file():
                study.runs[setup["name"]] = read_run(path / run, f"{name}-{setup['name']}")
            else:
                study.missing.append(run)
    return study


def read_sources(dirs: list[str]) -> tuple[list[Run], list[StudyReport]]:
    """Each DIR as a run or a study; a DIR that is neither is a one-line UserError."""
    runs, studies = [], []
    for d in dirs:
        path = Path(d)
        if not path.is_dir():
            raise UserError(f"{d}: {'not a directory' if path.exists() else 'no such directory'}; {EXPECTED}")
        if (path / "results.json").is_file():
            studies.append(read_study(path))
        elif (path / "metrics.jsonl").is_file():
            runs.append(read_run(path, path.resolve().name))
        elif (path / "study.yaml").is_file():
            raise UserError(f"{d}: a study with no results.json yet; run `electrolite study` on it first")
        else:
            raise UserError(f"{d}: neither metrics.jsonl nor results.json; {EXPECTED}")
    return runs, studies


# --- tables -------------------------------------------------------------------------------------


def flops_label(v: float) -> str:
    """``3.0e15``: two significant figures, the exponent without ``+`` or leading zeros; 0 is ``0``."""
    if v == 0:
        return "0"
    mantissa, exponent = f"{v:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def format_params(v: int | None) -> str:
    return DASH if v is None else f"{v / 1e6:.1f}M"


def format_score(entry: dict[str, float] | None) -> str:
    """``median (min–max)`` with one decimal, or ``–`` for a missing score."""
    return DASH if entry is None else f"{entry['median']:.1f} ({entry['min']:.1f}–{entry['max']:.1f})"


def study_table(study: StudyReport) -> dict[str, Any]:
    """The study's table: header, one row of cells per setup, and the numbers behind them."""
    tasks = study.data["tasks"]
    header = ["Setup", "Params", "Steps", "Pre-train FLOPs", *(t["label"] for t in tasks), "Average"]
    rows = []
    for s in study.data["setups"]:
        scores = {t["name"]: s["scores"].get(t["name"]) for t in tasks}
        cells = [s["label"] + ("" if s["complete"] else " (incomplete)"), format_params(s.get("parameters")),
                 f"{s['steps']:,}", flops_label(s["paper_flops"]), *(format_score(scores[t["name"]]) for t in tasks),
                 DASH if s["average"] is None else f"{s['average']:.1f}"]
        rows.append({"setup": s["name"], "label": s["label"], "complete": s["complete"], "pretrained": s["pretrained"],
                     "parameters": s.get("parameters"), "steps": s["steps"], "paper_flops": s["paper_flops"],
                     "scores": {k: None if v is None else {m: v[m] for m in ("median", "min", "max")}
                                for k, v in scores.items()},
                     "average": s["average"], "cells": cells})
    return {"name": study.name, "path": str(study.path), "budget": study.data.get("budget", {}).get("text", ""),
            "seeds": study.data.get("seeds"), "header": header, "rows": rows}


def run_summary(run: Run) -> dict[str, Any]:
    """Final step, final training loss and the last validation line's metrics."""
    last = max(run.train + run.valid, key=lambda m: m["step"])
    summary: dict[str, Any] = {"name": run.name, "path": str(run.path), "objective": run.objective, "size": run.size,
                               "final_step": last["step"], "final_loss": run.train[-1]["loss"] if run.train else None,
                               "last_valid": dict(run.valid[-1]) if run.valid else None}
    return summary


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    esc = [[cell.replace("|", "\\|") for cell in row] for row in [header, *rows]]
    return ["| " + " | ".join(esc[0]) + " |", "|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|",
            *("| " + " | ".join(row) + " |" for row in esc[1:])]


def _run_line(summary: dict[str, Any], plot: str) -> str:
    what = " ".join(s for s in (summary["objective"], summary["size"]) if s)
    parts = [f"step {summary['final_step']:,}"]
    if summary["final_loss"] is not None:
        parts.append(f"train loss {summary['final_loss']:.4f}")
    valid = summary["last_valid"]
    if valid:
        shown_metrics = ", ".join(f"{label} {valid[k]:.4f}" for k, label in VALID_SHOWN if k in valid)
        parts.append(f"validation at step {valid['step']:,}: {shown_metrics}")
    return (f"- **{summary['name']}**" + (f" ({what})" if what else "") + f", `{summary['path']}`: "
            + "; ".join(parts) + f". [curves]({plot})")


def markdown(runs: list[dict[str, Any]], tables: list[dict[str, Any]], studies: list[StudyReport],
             figures: list[tuple[str, str]]) -> str:
    lines = ["# electrolite report", "", "Sources:", ""]
    lines += [f"- study **{s.name}**: `{s.path}`" for s in studies]
    lines += [f"- run **{r['name']}**: `{r['path']}`" for r in runs if not r["in_study"]]
    for table, study in zip(tables, studies):
        lines += ["", f"## Study {table['name']}", ""]
        about = [f"budget {table['budget']}" if table["budget"] else "",
                 f"{table['seeds']} seeds per task" if table["seeds"] else "",
                 "scores on a 0–100 scale: median over seeds (min–max); Average: mean of the task medians"]
        text = "; ".join(a for a in about if a)
        lines += [text[0].upper() + text[1:] + ".", ""]
        lines += markdown_table(table["header"], [row["cells"] for row in table["rows"]])
        if study.missing:
            lines += ["", "No metrics yet for: " + ", ".join(f"`{m}`" for m in study.missing) + "."]
    lines += ["", "## Figures", ""]
    for name, title in figures:
        lines += [f"![{title}]({name})", ""]
    lines += ["## Pre-training runs", ""]
    lines += [_run_line(r, r["plot"]) for r in runs]
    return "\n".join(lines) + "\n"


# --- writing ------------------------------------------------------------------------------------


def _file_name(name: str, taken: set[str]) -> str:
    """``curves-<name>.png`` with unsafe characters replaced, unique among `taken`."""
    stem = "curves-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "run")
    candidate, n = f"{stem}.png", 1
    while candidate in taken:
        n += 1
        candidate = f"{stem}-{n}.png"
    taken.add(candidate)
    return candidate


def check_out(out: Path) -> None:
    """OUT must be missing, empty, or a previous report (has report.md): nothing else is replaced."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory; choose a new --out (nothing was overwritten)")
    if out.is_dir() and any(out.iterdir()) and not (out / "report.md").is_file():
        raise UserError(f"{out} exists and is not a previous report (no report.md); choose a new --out "
                        "(nothing was overwritten)")


def _render(runs: list[Run], studies: list[StudyReport], tmp: Path) -> list[str]:
    """Draws every figure and writes report.md and report.json into `tmp`; returns the PNG names."""
    all_runs = [(run, False) for run in runs] + [(run, True) for study in studies for run in study.runs.values()]
    taken: set[str] = set()
    summaries = []
    for run, in_study in all_runs:
        plot = _file_name(run.name, taken)
        plots.curves(run, tmp / plot)
        summaries.append({**run_summary(run), "plot": plot, "in_study": in_study})
    figures = []
    if len(all_runs) >= 2:
        plots.compare_curves([run for run, _ in all_runs], tmp / "compare-curves.png")
        figures.append(("compare-curves.png", "validation curves of all runs"))
    tables = [study_table(s) for s in studies]
    if studies:
        plots.score_vs_flops(studies, tmp / "score-vs-flops.png")
        figures.append(("score-vs-flops.png", "average score vs pre-training FLOPs"))
        tasks = list({t["name"]: t for s in studies for t in s.data["tasks"]}.values())
        if tasks:
            plots.scores_per_task(studies, tasks, tmp / "scores-per-task.png")
            figures.append(("scores-per-task.png", "score per task vs pre-training FLOPs"))
    figures += [(r["plot"], f"curves of {r['name']}") for r in summaries]
    (tmp / "report.md").write_text(markdown(summaries, tables, studies, figures), encoding="utf-8")
    report = {"format": REPORT_FORMAT, "format_version": REPORT_VERSION,
              "sources": [{"kind": "study", "name": s.name, "path": str(s.path)} for s in studies]
              + [{"kind": "run", "name": r.name, "path": str(r.path)} for r in runs],
              "studies": tables, "runs": summaries, "figures": [name for name, _ in figures]}
    (tmp / "report.json").write_text(json.dumps(report, indent=1, allow_nan=True) + "\n", encoding="utf-8")
    return [name for name, _ in figures]


def write_report(dirs: list[str], out: str | Path) -> tuple[Path, list[str]]:
    """Reads every DIR, then writes OUT (report.md, report.json, PNGs) atomically.

    Args:
        dirs: pre-training run dirs and study dirs, in the order they are listed.
        out: the report dir: created, or replaced when it holds a previous report.

    Returns:
        The path of report.md and the names of the PNGs written.
    """
    plots.require_matplotlib()
    out = Path(out)
    check_out(out)
    runs, studies = read_sources(dirs)
    real = out.resolve()  # "." or "reports/" have no usable name of their own
    tmp = real.parent / f".{real.name}.tmp-{os.getpid()}"
    old = real.parent / f".{real.name}.old-{os.getpid()}"
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        pngs = _render(runs, studies, tmp)
        if real.exists():
            real.replace(old)
        tmp.replace(real)
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e} (nothing was changed)") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and real.exists():
            shutil.rmtree(old, ignore_errors=True)
        elif old.exists():  # the rename into place failed: the previous report goes back
            old.replace(real)
    return out / "report.md", pngs
