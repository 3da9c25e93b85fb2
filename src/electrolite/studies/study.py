"""`electrolite study CONFIG --out DIR`: pre-training setups at equal compute, fine-tuned on tasks.

The ELECTRA paper's central comparison (its Table 1 and Figure 1) at the user's own budget: every
setup (objective × size × sharing) is pre-trained to the same budget — paper-convention FLOPs, so
each setup gets as many steps as its per-step cost allows, or wall-clock time — then fine-tuned on
every task with N seeds; a setup with `from_scratch: OTHER` fine-tunes OTHER's architecture from
random weights (the no-pre-training row).

The study directory::

    DIR/study.yaml                          the resolved study (a re-run must match it)
    DIR/pretrain/<setup>/                   pre-training run dirs (resumable)
    DIR/finetune/<setup>/<task>/seed-<k>/   task dirs (eval_results.json)
    DIR/results.json, DIR/results.md        the table, rewritten after every fine-tune

Re-running the command resumes: finished runs are read back, an interrupted pre-training run
resumes from its checkpoint, an interrupted fine-tune starts that seed again (fine-tunes write
into a temporary dir renamed when complete). Fine-tunes go seed by seed over all setups and
tasks, so an interrupted study already has comparable medians.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import statistics
from pathlib import Path
from typing import Any, TypeGuard

from safetensors import SafetensorError, safe_open

from electrolite import config as cfgmod
from electrolite import finetune, initialize
from electrolite.configio import load_yaml, save_yaml
from electrolite.errors import UserError, shown_repr
from electrolite.pretrain import RunSetup, config_differences
from electrolite.studies import report
from electrolite.tasks import get_task
from electrolite.training import checkpoint

FORMAT_VERSION = 1
_SETUP_KEYS = {"name", "label", "config", "from_scratch"}
_TASK_OVERRIDES = ("max_train_examples", "epochs", "learning_rate", "batch_size", "max_length")
_TASK_KEYS = {"name", "data", "metric", "label", *_TASK_OVERRIDES}
_STUDY_KEYS = {"name", "corpus", "budget", "seeds", "data_dir", "base", "setups", "tasks", "finetune"}
_METRIC_LABELS = {"accuracy": "acc", "spearman": "Spearman", "pearson": "Pearson", "f1": "F1", "mcc": "MCC"}
_TASK_LABELS = {"sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "conll2003": "CoNLL-2003", "cola": "CoLA",
                "qnli": "QNLI", "rte": "RTE", "mnli": "MNLI", "qqp": "QQP", "squad1": "SQuAD 1.1"}


@dataclasses.dataclass
class Budget:
    """Pre-training compute every setup gets: paper-convention FLOPs or wall-clock seconds."""

    kind: str  # "paper_flops" or "seconds"
    value: float
    text: str

    @staticmethod
    def parse(value: object, where: str) -> "Budget":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            flops = float(value)
        elif isinstance(value, str) and value.strip():
            text = value.strip()
            try:
                flops = float(text)
            except ValueError:
                try:
                    return Budget("seconds", cfgmod.parse_duration(text), text)
                except UserError:
                    raise UserError(f"{where}: cannot read {shown_repr(text)}; use paper FLOPs (e.g. 2e14) "
                                    f"or a duration (e.g. 20m)") from None
        else:
            raise UserError(f"{where}: budget must be paper FLOPs (e.g. 2e14) or a duration (e.g. 20m)")
        if not math.isfinite(flops) or flops <= 0:
            raise UserError(f"{where}: budget must be a positive number of FLOPs, got {shown_repr(value)}")
        return Budget("paper_flops", flops, f"{flops:.1e} FLOPs")


@dataclasses.dataclass
class Setup:
    name: str
    label: str
    config: dict[str, Any]  # a PretrainConfig mapping (as in RUN/config.yaml), base merged in
    from_scratch: str = ""  # fine-tune this other setup's architecture from random weights


@dataclasses.dataclass
class TaskSpec:
    name: str
    data: str
    metric: str
    label: str
    overrides: dict[str, Any]  # FinetuneConfig fields for this task


@dataclasses.dataclass
class Study:
    name: str
    corpus: str
    budget: Budget
    seeds: int
    setups: list[Setup]
    tasks: list[TaskSpec]
    finetune: dict[str, Any]
    raw: dict[str, Any]  # what study.yaml holds


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of config mappings (`over` wins)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _mapping(value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{where} must be a mapping")
    return value


def _unknown(data: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise UserError(f"{where}: unknown key {shown_repr(extra[0])}; allowed: {', '.join(sorted(allowed))}")


def _entries(raw: dict[str, Any], key: str, allowed: set[str], where: str):
    """(location, mapping) of each entry of the non-empty list `raw[key]`, checked for unknown keys."""
    items = raw.get(key)
    if not isinstance(items, list) or not items:
        raise UserError(f"{where}: {key} must be a non-empty list")
    for i, item in enumerate(items):
        at = f"{where}: {key}[{i}]"
        item = _mapping(item, at)
        _unknown(item, allowed, at)
        yield at, item


def default_data_dir() -> str:
    return os.environ.get("ELECTROLITE_DATA", "../shared/data")


def load_study(path: str) -> Study:
    """Read and check a study config; every mistake is one line naming the file and the field."""
    raw = load_yaml(path)
    where = str(path)
    _unknown(raw, _STUDY_KEYS, where)
    name = str(raw.get("name") or Path(path).stem)
    corpus = raw.get("corpus")
    if not isinstance(corpus, str) or not corpus:
        raise UserError(f"{where}: corpus must name a directory written by `electrolite prepare`")
    budget = Budget.parse(raw.get("budget"), f"{where}: budget")
    seeds = raw.get("seeds", 3)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise UserError(f"{where}: seeds must be a positive integer, got {shown_repr(seeds)}")
    base = _mapping(raw.get("base"), f"{where}: base")
    setups: list[Setup] = []
    for at, s in _entries(raw, "setups", _SETUP_KEYS, where):
        sname = s.get("name")
        if not isinstance(sname, str) or not sname or "/" in sname or sname.startswith("."):
            raise UserError(f"{at}.name must be a non-empty name usable as a directory")
        if any(x.name == sname for x in setups):
            raise UserError(f"{at}.name {shown_repr(sname)} is used twice")
        setups.append(Setup(sname, str(s.get("label") or sname),
                            merge(base, _mapping(s.get("config"), f"{at}.config")), str(s.get("from_scratch") or "")))
    names = [s.name for s in setups]
    for i, s in enumerate(setups):
        if s.from_scratch and (s.from_scratch not in names or _setup(setups, s.from_scratch).from_scratch):
            raise UserError(f"{where}: setups[{i}].from_scratch must name a pre-trained setup, "
                            f"got {shown_repr(s.from_scratch)}")
    data_dir = str(raw.get("data_dir") or default_data_dir())
    tasks: list[TaskSpec] = []
    for at, t in _entries(raw, "tasks", _TASK_KEYS, where):
        try:
            task = get_task(str(t.get("name")))
        except UserError as e:
            raise UserError(f"{at}.name: {e}") from None
        metric = str(t.get("metric") or f"{task.eval_splits[0]}_{task.main_metric}")
        data = str(t.get("data") or task.name)
        data = data if os.path.isabs(data) else os.path.join(data_dir, data)
        if not os.path.exists(data):  # found now, not after hours of pre-training
            raise UserError(f"{at}.data: {data} does not exist (data_dir {data_dir}: set it in the study or "
                            f"$ELECTROLITE_DATA)")
        label = str(t.get("label") or f"{_TASK_LABELS.get(task.name, task.name)} "
                    f"{_METRIC_LABELS.get(metric.split('_', 1)[-1], metric)}")
        overrides = {k: t[k] for k in _TASK_OVERRIDES if k in t}
        tasks.append(TaskSpec(task.name, data, metric, label, overrides))
    finetune = _mapping(raw.get("finetune"), f"{where}: finetune")
    resolved = dict(raw, name=name, seeds=seeds, data_dir=data_dir)
    study = Study(name, corpus, budget, seeds, setups, tasks, finetune, resolved)
    for s in setups:  # every setup's pre-training config must resolve (one line naming it otherwise)
        if not s.from_scratch:
            try:
                setup_pretrain_config(study, s, Path("."), steps=1)
            except UserError as e:
                raise UserError(f"{where}: setups {s.name}: {e}") from None
    return study


def _setup(setups: list[Setup], name: str) -> Setup:
    return next(s for s in setups if s.name == name)


def setup_pretrain_config(study: Study, setup: Setup, out: Path, steps: int) -> cfgmod.PretrainConfig:
    """The setup's pre-training config with the study's corpus, run dir and step count."""
    data = merge(setup.config, {"corpus": study.corpus, "out": str(out / "pretrain" / setup.name)})
    train = data.setdefault("train", {})
    train["steps"] = steps
    if study.budget.kind == "seconds":
        train["budget"] = study.budget.text
    train.setdefault("eval_every", max(1, steps // 10))
    train.setdefault("save_every", max(1, steps // 5))
    train.setdefault("progress", False)
    return initialize.pretrain_config(data)  # a study's setup may start from a checkpoint (init)


def steps_for_budget(study: Study, setup: Setup) -> tuple[int, float]:
    """(steps, paper FLOPs per step) so that a setup spends the study's budget."""
    cfg = setup_pretrain_config(study, setup, Path("."), steps=1)
    run_setup = RunSetup(cfg)
    f = cfg.objective.two_stage_fraction if cfg.objective.name == "electra" else 0.0
    # ELECTRA's two-stage warm start spends share f of its steps as the cheaper masked LM
    per_step = run_setup.flops.mean_paper_per_step(f)
    if study.budget.kind == "seconds":  # the wall clock stops it; the schedule needs a step count
        steps = int(setup.config.get("train", {}).get("steps", 0))
        if steps < 1:
            raise UserError(f"setups {setup.name}: a time budget needs train.steps (the learning-rate schedule's "
                            f"length; the run stops at {study.budget.text} or at that step)")
        return steps, per_step
    steps = int(study.budget.value // per_step)
    if steps < 1:
        raise UserError(f"setups {setup.name}: the budget {study.budget.text} is less than one step "
                        f"({per_step:.2e} FLOPs)")
    return steps, per_step


# --- running ----------------------------------------------------------------------------------


def check_study_dir(study: Study, out: Path) -> None:
    """A new dir gets study.yaml; an existing one must hold the same study (else one line, nothing touched)."""
    saved_path = out / "study.yaml"
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a directory")
    if saved_path.exists():
        saved = load_yaml(saved_path)
        diffs = config_differences(saved, study.raw)
        if diffs:
            shown_diffs = [f"{d}: {shown_repr(_dotted(saved, d))} → {shown_repr(_dotted(study.raw, d))}" for d in diffs[:3]]
            raise UserError(f"{out} holds a different study ({'; '.join(shown_diffs)}); use a new --out "
                            f"or the config in {saved_path}")
        return
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not a study directory (no study.yaml); choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(study.raw, saved_path)


def _dotted(data: dict[str, Any], key: str) -> object:
    value: object = data
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def pretraining_state(study: Study, out: Path):
    """(setup, steps, paper FLOPs per step, its summary if finished else None) for each pre-trained setup."""
    for setup in study.setups:
        if setup.from_scratch:
            continue
        steps, per_step = steps_for_budget(study, setup)
        done = read_json_if_any(out / "pretrain" / setup.name / "summary.json")
        yield setup, steps, per_step, (done if pretraining_finished(done, study) else None)


def pretraining_finished(summary: dict[str, Any] | None, study: Study) -> TypeGuard[dict[str, Any]]:
    """A run that completed its steps, or (time budget) stopped when the budget ran out."""
    if not summary:
        return False
    reason = str(summary["stop_reason"])
    return reason == "completed" or (study.budget.kind == "seconds" and reason.startswith("budget"))


def pretraining_label(setup: Setup, steps: int, per_step: float) -> str:
    return f"pre-training {setup.name} for {steps:,} steps ({per_step * steps:.2e} paper FLOPs)"


def finetune_label(setup: Setup, task: TaskSpec, seed: int) -> str:
    return f"fine-tuning {setup.name} on {task.name}, seed {seed}"


def pending_finetunes(study: Study, out: Path):
    """(setup, task, seed, task dir) of every fine-tune not yet done, seed by seed over setups and tasks."""
    for seed in range(study.seeds):
        for setup in study.setups:
            for task in study.tasks:
                task_dir = out / "finetune" / setup.name / task.name / f"seed-{seed}"
                if not (task_dir / "eval_results.json").exists():
                    yield setup, task, seed, task_dir


def read_json_if_any(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot be read ({e}); delete it to redo that part of the study") from None


def finetune_one(study: Study, setup: Setup, task: TaskSpec, seed: int, out: Path, task_dir: Path) -> dict[str, Any]:
    source = setup.from_scratch or setup.name
    fields = merge(study.finetune, task.overrides)
    fields.update(task=task.name, model=str(out / "pretrain" / source), data=task.data, out=str(task_dir),
                  seed=seed, seeds=1, from_scratch=bool(setup.from_scratch))
    fields.setdefault("progress", False)
    cfg = cfgmod.build(cfgmod.FinetuneConfig, fields, "finetune")
    task_dir.parent.mkdir(parents=True, exist_ok=True)
    return finetune.run(cfg)


# --- results ----------------------------------------------------------------------------------


def _spread(values: list[float]) -> dict[str, Any]:
    return {"values": [round(v, 4) for v in values], "median": round(statistics.median(values), 4),
            "min": round(min(values), 4), "max": round(max(values), 4),
            "std": round(statistics.pstdev(values), 4) if len(values) > 1 else 0.0}


def collect(study: Study, out: Path, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """results.json's content from what is on disk (fine-tunes) and the pre-training summaries."""
    rows = []
    for setup in study.setups:
        scores: dict[str, Any] = {}
        complete = True
        for task in study.tasks:
            values = []
            for seed in range(study.seeds):
                res = read_json_if_any(out / "finetune" / setup.name / task.name / f"seed-{seed}" / "eval_results.json")
                if res is None:
                    complete = False
                    continue
                split, metric = task.metric.split("_", 1) if "_" in task.metric else ("dev", task.metric)
                value = res["results"].get(split, {}).get(metric)
                if value is None:
                    raise UserError(f"{study.name}: task {task.name} has no metric {task.metric} "
                                    f"(eval_results.json has {', '.join(res['results'].get(split, {}))})")
                values.append(100.0 * float(value))
            if values:
                scores[task.name] = _spread(values)
        medians = [scores[t.name]["median"] for t in study.tasks if t.name in scores]
        run = runs.get(setup.from_scratch or setup.name) or {}
        pretrained = not setup.from_scratch
        cfg = setup.config if pretrained else _setup(study.setups, setup.from_scratch).config
        objective = cfg.get("objective", {})
        model = cfg.get("model", {})
        rows.append({
            "name": setup.name, "label": setup.label,
            "objective": objective.get("name", "electra") if pretrained else "none",
            "size": cfg.get("size", ""), "sop": bool(objective.get("sop", False)),
            "shared": bool(model.get("num_hidden_groups", 0)), "pretrained": pretrained,
            "run": f"pretrain/{setup.name}" if pretrained else None,
            "from_scratch": setup.from_scratch or None,
            "parameters": _parameters(out / "pretrain" / (setup.from_scratch or setup.name)),
            "steps": int(run.get("step", 0)) if pretrained else 0,
            "paper_flops": float(run.get("paper_flops", 0.0)) if pretrained else 0.0,
            "model_flops": float(run.get("model_flops", 0.0)) if pretrained else 0.0,
            "train_seconds": float(run.get("elapsed_seconds", 0.0)) if pretrained else 0.0,
            "scores": scores,
            "average": round(sum(medians) / len(medians), 4) if len(medians) == len(study.tasks) else None,
            "complete": complete})
    return {"format": "electrolite-study", "format_version": FORMAT_VERSION, "name": study.name,
            "budget": dataclasses.asdict(study.budget), "seeds": study.seeds, "corpus": study.corpus,
            "tasks": [{"name": t.name, "metric": t.metric, "label": t.label} for t in study.tasks],
            "setups": rows}


def _parameters(run_dir: Path) -> int | None:
    """Encoder parameters (the discriminator for ELECTRA) of a pre-training run, counted from its weights."""
    path = run_dir / "model.safetensors"
    if not path.exists():
        return None
    total = 0
    try:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                if key.startswith(("discriminator.", "encoder.")):
                    total += math.prod(f.get_slice(key).get_shape())
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path}: not a readable safetensors file ({e}); delete {run_dir} to pre-train that "
                        f"setup again") from None
    return total


def write_results(study: Study, out: Path, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    results = collect(study, out, runs)
    checkpoint.write_json(results, out / "results.json")
    tmp = out / ".results.md.tmp"
    tmp.write_text(results_markdown(results, out), encoding="utf-8")
    tmp.replace(out / "results.md")
    return results


def results_markdown(results: dict[str, Any], path: Path) -> str:
    """The results table as markdown (the same table `electrolite report` renders)."""
    table = report.study_table(report.StudyReport(results["name"], path, results))
    return "\n".join([f"# Study {results['name']}: budget {results['budget']['text']}, {results['seeds']} seeds", "",
                      *report.markdown_table(table["header"], [r["cells"] for r in table["rows"]]), "",
                      "Scores ×100 on each task's dev split: median (min–max) over seeds; Average is the mean of "
                      "the medians. FLOPs are the ELECTRA paper's convention (its Table 1).", ""])
