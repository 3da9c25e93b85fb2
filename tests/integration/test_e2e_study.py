"""`electrolite study` end to end on real data: equal budgets, the results table, resuming, and `report`.

A tiny study: ELECTRA and MLM pre-trained on the book-corpus slice to the same paper-convention
FLOPs, plus the no-pre-training row, each fine-tuned on slices of SST-2 and STS-B with two seeds.
"""

from __future__ import annotations

import json
import shutil
import signal
import statistics
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from electrolite import flops
from electrolite.config import resolve_pretrain_config

from .conftest import COMMAND, cli, cli_ok, reaped, snapshot, subprocess_env, user_error

BUDGET = 2.0e11  # paper FLOPs: ~20 tiny ELECTRA steps of 8 × 64 tokens, more MLM steps
BASE = {"size": "tiny", "train": {"batch_size": 8, "precision": "fp32", "device": "cpu", "seed": 0}}
SETUPS = [
    {"name": "electra", "label": "ELECTRA", "config": {"objective": {"name": "electra"}}},
    {"name": "mlm", "label": "BERT (MLM)", "config": {"objective": {"name": "mlm"}}},
    {"name": "none", "label": "no pre-training", "from_scratch": "electra"},
]
TASKS = [
    {"name": "sst2", "data": "glue/SST-2", "max_train_examples": 160, "epochs": 1, "max_length": 64},
    {"name": "stsb", "data": "glue/STS-B", "max_train_examples": 160, "epochs": 1, "max_length": 64},
]


def write_study(path: Path, corpus: Path, data: Path, **changes) -> Path:
    study = {"name": "tiny", "corpus": str(corpus), "budget": BUDGET, "seeds": 2, "data_dir": str(data),
             "base": BASE, "setups": SETUPS, "tasks": TASKS,
             "finetune": {"batch_size": 16, "precision": "fp32", "device": "cpu"}, **changes}
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    return path


def per_step_flops(objective: str, corpus: Path) -> float:
    meta = json.loads((corpus / "meta.json").read_text())
    cfg = resolve_pretrain_config({**BASE, "objective": {"name": objective}, "model": {"vocab_size": meta["vocab_size"]}})
    model, gen = cfg.model, cfg.generator_config()
    return flops.estimate(model, gen, objective, False, 1, 8, meta["seq_len"], 0.15).paper_flops_per_step


@pytest.fixture(scope="module")
def study(fixed_corpus: Path, shared_data: Path, tmp_path_factory) -> tuple[Path, Path, str]:
    if not (shared_data / "glue" / "STS-B" / "dev.tsv").is_file():
        pytest.skip("GLUE data missing")
    root = tmp_path_factory.mktemp("study")
    config = write_study(root / "study.yaml", fixed_corpus, shared_data)
    out = root / "out"
    r = cli_ok("study", config, "--out", out)
    return config, out, r.out


def test_every_setup_spends_the_same_budget(study, fixed_corpus):
    _, out, _ = study
    rows = {r["name"]: r for r in json.loads((out / "results.json").read_text())["setups"]}
    mlm, electra = per_step_flops("mlm", fixed_corpus), per_step_flops("electra", fixed_corpus)
    steps = int(BUDGET // mlm)
    assert rows["mlm"]["steps"] == steps
    assert BUDGET - mlm < rows["mlm"]["paper_flops"] <= BUDGET
    assert rows["mlm"]["paper_flops"] == pytest.approx(steps * mlm)
    # ELECTRA's default recipe spends 30% of its steps as a masked LM on the discriminator (the cheaper step): the
    # budget buys steps at the mean cost, and the run's FLOPs count each stage at its own
    steps = int(BUDGET // (0.3 * mlm + 0.7 * electra))
    first = round(0.3 * steps)
    assert rows["electra"]["steps"] == steps
    assert rows["electra"]["paper_flops"] == pytest.approx(first * mlm + (steps - first) * electra)
    assert abs(rows["electra"]["paper_flops"] - BUDGET) < electra
    for name in ("electra", "mlm"):
        summary = json.loads((out / "pretrain" / name / "summary.json").read_text())
        assert summary["step"] == rows[name]["steps"] and summary["stop_reason"] == "completed"
    assert rows["mlm"]["steps"] > rows["electra"]["steps"]  # MLM steps are cheaper: more of them
    assert rows["none"]["steps"] == 0 and rows["none"]["paper_flops"] == 0 and not rows["none"]["pretrained"]
    # The no-pre-training row has ELECTRA's discriminator architecture.
    assert rows["none"]["parameters"] == rows["electra"]["parameters"] > 0


def test_the_table_is_the_median_of_the_seeds_fine_tunes(study):
    _, out, printed = study
    results = json.loads((out / "results.json").read_text())
    assert results["format"] == "electrolite-study" and results["seeds"] == 2
    metric = {"sst2": ("dev", "accuracy"), "stsb": ("dev", "spearman")}
    md = (out / "results.md").read_text()
    for row in results["setups"]:
        assert row["complete"]
        medians = []
        for task, (split, name) in metric.items():
            values = [100 * json.loads((out / "finetune" / row["name"] / task / f"seed-{s}" / "eval_results.json")
                                       .read_text())["results"][split][name] for s in range(2)]
            score = row["scores"][task]
            assert score["values"] == pytest.approx(values, abs=1e-4)
            assert score["median"] == pytest.approx(statistics.median(values), abs=1e-4)
            assert (score["min"], score["max"]) == pytest.approx((min(values), max(values)), abs=1e-4)
            medians.append(score["median"])
            assert f"{score['median']:.1f} ({score['min']:.1f}–{score['max']:.1f})" in md
        assert row["average"] == pytest.approx(sum(medians) / 2, abs=1e-4)
        line = next(line for line in md.splitlines() if line.startswith(f"| {row['label']} |"))
        assert line.rstrip(" |").endswith(f"{row['average']:.1f}")
    # Seeds differ: the two fine-tunes of a setup are not the same run.
    a, b = (out / "finetune" / "electra" / "sst2" / f"seed-{s}" / "model.safetensors" for s in range(2))
    assert a.read_bytes() != b.read_bytes()
    assert "3/3 setups complete" in printed


def test_a_rerun_resumes_only_what_is_missing(study, tmp_path):
    config, out, _ = study
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    before = json.loads((copy / "results.json").read_text())
    # An interrupted study: one fine-tune never finished (a temp dir left), one pre-training summary intact.
    shutil.rmtree(copy / "finetune" / "mlm" / "stsb" / "seed-1")
    (copy / "finetune" / "mlm" / "stsb" / ".seed-1.tmp").mkdir()
    kept = snapshot(copy / "pretrain")
    r = cli_ok("study", config, "--out", copy)
    assert [line for line in r.out.splitlines() if line.startswith("study:")] == [
        "study: fine-tuning mlm on stsb, seed 1"]
    assert snapshot(copy / "pretrain") == kept
    assert not (copy / "finetune" / "mlm" / "stsb" / ".seed-1.tmp").exists()
    after = json.loads((copy / "results.json").read_text())
    assert after == before  # the same seed fine-tunes to the same score


def test_an_interrupted_pretraining_resumes_from_its_checkpoint(study, fixed_corpus, shared_data, tmp_path):
    config, out, _ = study
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    # Back to the middle of MLM's pre-training: its last checkpoint gone, summary gone, no fine-tunes yet.
    run = copy / "pretrain" / "mlm"
    (run / "summary.json").unlink()
    checkpoints = sorted(p for p in (run / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert len(checkpoints) >= 2
    shutil.rmtree(checkpoints[-1])
    (run / "checkpoints" / "latest").write_text(checkpoints[-2].name)
    shutil.rmtree(copy / "finetune" / "mlm")
    r = cli_ok("study", config, "--out", copy)
    assert "resuming from " + checkpoints[-2].name in r.err
    assert (run / "model.safetensors").read_bytes() == (out / "pretrain" / "mlm" / "model.safetensors").read_bytes()
    one, two = (json.loads((d / "results.json").read_text()) for d in (out, copy))
    for row in one["setups"] + two["setups"]:
        row.pop("train_seconds")  # wall time (the resumed run's includes the redone steps); all else identical
    assert one == two


def test_a_different_study_in_the_same_dir_is_refused(study, fixed_corpus, shared_data, tmp_path):
    _, out, _ = study
    before = snapshot(out)
    other = write_study(tmp_path / "other.yaml", fixed_corpus, shared_data, budget=BUDGET * 2)
    msg = user_error(cli("study", other, "--out", out))
    assert msg.startswith(f"{out} holds a different study (budget: 200000000000.0 → 400000000000.0)") and "use a new --out" in msg
    assert snapshot(out) == before


def test_report_renders_the_study_table_and_plots(study, tmp_path):
    _, out, _ = study
    results = json.loads((out / "results.json").read_text())
    report = tmp_path / "report"
    r = cli_ok("report", out, "--out", report)
    assert f"wrote {report}/report.md" in r.out
    md = (report / "report.md").read_text()
    for row in results["setups"]:
        line = next(line for line in md.splitlines() if line.startswith(f"| {row['label']} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[-1] == f"{row['average']:.1f}"
        for cell, task in zip(cells[4:-1], results["tasks"]):
            s = row["scores"][task["name"]]
            assert cell == f"{s['median']:.1f} ({s['min']:.1f}–{s['max']:.1f})"
    for png in ("score-vs-flops.png", "scores-per-task.png", "curves-tiny-electra.png", "curves-tiny-mlm.png"):
        data = (report / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
        assert f"({png})" in md


@pytest.mark.parametrize("change, message", [
    ({"budget": "lots"}, "budget: cannot read 'lots'"),
    ({"budget": -1}, "budget must be a positive number of FLOPs"),
    ({"seeds": 0}, "seeds must be a positive integer"),
    ({"setups": [{"name": "none", "from_scratch": "electra"}]}, "setups[0].from_scratch must name a pre-trained setup"),
    ({"tasks": [{"name": "nope"}]}, "tasks[0].name: unknown task"),
    ({"colour": 1}, "unknown key 'colour'"),
    ({"data_dir": "/nonexistent"}, "tasks[0].data: /nonexistent/glue/SST-2 does not exist"),
    ({"setups": [{"name": "a", "config": {"objective": {"name": "gan"}}}]}, "objective.name must be electra or mlm"),
])
def test_bad_study_configs_are_one_line(change, message, fixed_corpus, shared_data, tmp_path):
    config = write_study(tmp_path / "s.yaml", fixed_corpus, shared_data, **change)
    msg = user_error(cli("study", config, "--out", tmp_path / "out"))
    assert msg.startswith(str(config)) and message in msg, msg
    assert not (tmp_path / "out").exists()


def test_jobs_run_the_same_study_in_parallel_processes(study, tmp_path):
    config, out, _ = study
    parallel = tmp_path / "out"
    r = cli_ok("study", config, "--out", parallel, "--jobs", "2")
    lines = [line for line in r.out.splitlines() if line.startswith("study:")]
    assert lines[0] == "study: 14 units to run, 2 at a time, 1 torch thread(s) each"
    assert sorted(lines[1:3]) == [f"study: pre-training {s} for {n:,} steps ({f:.2e} paper FLOPs)" for s, n, f in
                                  sorted((row["name"], row["steps"], row["paper_flops"]) for row in
                                         json.loads((out / "results.json").read_text())["setups"][:2])]
    assert len(lines) == 1 + 2 + 12
    one, two = (json.loads((d / "results.json").read_text()) for d in (out, parallel))
    for row in one["setups"] + two["setups"]:
        row.pop("train_seconds")  # wall time; all else is the same study, scores to the last digit
    assert one == two
    evals = [{str(p.relative_to(d)): json.loads(p.read_text())["results"] for p in d.rglob("eval_results.json")}
             for d in (out / "finetune", parallel / "finetune")]
    assert evals[0] == evals[1] and len(evals[0]) == 12


def test_a_failing_job_stops_the_others_and_a_rerun_finishes(study, tmp_path):
    config, out, _ = study
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    for task_dir in ("mlm/sst2/seed-1", "electra/stsb/seed-1"):
        shutil.rmtree(copy / "finetune" / task_dir)
    (copy / "pretrain" / "mlm" / "tokenizer.json").write_text("{not json", encoding="utf-8")
    kept = snapshot(copy / "pretrain" / "electra")
    message = user_error(cli("study", config, "--out", copy, "--jobs", "2"))
    assert message.startswith("fine-tuning mlm on sst2, seed 1: ") and "tokenizer.json" in message
    assert snapshot(copy / "pretrain" / "electra") == kept
    # The electra fine-tune running beside it was stopped, not half-written.
    assert not (copy / "finetune" / "electra" / "stsb" / "seed-1").exists()
    results = json.loads((copy / "results.json").read_text())
    assert [row["complete"] for row in results["setups"]] == [False, False, True]
    shutil.copy(out / "pretrain" / "mlm" / "tokenizer.json", copy / "pretrain" / "mlm" / "tokenizer.json")
    cli_ok("study", config, "--out", copy, "--jobs", "2")
    assert json.loads((copy / "results.json").read_text()) == json.loads((out / "results.json").read_text())


def test_sigterm_stops_the_jobs_and_a_rerun_finishes_the_same_study(study, tmp_path):
    config, out, _ = study
    parallel = tmp_path / "out"
    proc = subprocess.Popen([*COMMAND, "study", str(config), "--out", str(parallel), "--jobs", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    with reaped(proc):
        deadline = time.monotonic() + 300
        while not list((parallel / "finetune").glob("*/*/.seed-*.tmp")):  # a fine-tune under way
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no fine-tune started within 300 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "study: stopped by SIGTERM; re-run the same command to resume" in stdout.splitlines()
    assert "Traceback" not in stderr
    stopped = json.loads((parallel / "results.json").read_text())
    assert not all(row["complete"] for row in stopped["setups"])
    cli_ok("study", config, "--out", parallel, "--jobs", "2")
    one, two = (json.loads((d / "results.json").read_text()) for d in (out, parallel))
    for row in one["setups"] + two["setups"]:
        row.pop("train_seconds")
    assert one == two


def test_an_unreadable_pretrained_model_is_one_line(study, tmp_path):
    config, out, _ = study
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    (copy / "pretrain" / "mlm" / "model.safetensors").write_bytes(b"not safetensors")
    message = user_error(cli("study", config, "--out", copy))
    assert message.startswith(f"{copy / 'pretrain' / 'mlm' / 'model.safetensors'}: not a readable safetensors file")
