"""`electrolite report`: plots and tables from real tiny pre-training runs and study dirs built around them.

The runs are real (`electrolite pretrain` on a slice of the book corpus); the studies copy them into
`pretrain/<setup>/` next to a results.json written here per the study schema (format_version 1),
since its fine-tuning scores are what the report tabulates.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from integration import conftest as e2e
from integration.conftest import TINY, cli, cli_ok, read_metrics, snapshot, user_error

from electrolite.studies import plots, report

books = e2e.books  # the corpus fixtures of the end-to-end tests (a real book-corpus slice)
fixed_corpus = e2e.fixed_corpus

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXPECTED = "expected a pre-training run dir (metrics.jsonl) or a study dir (results.json)"
TASKS = [{"name": "sst2", "metric": "dev_accuracy", "label": "SST-2 acc"},
         {"name": "stsb", "metric": "dev_spearman", "label": "STS-B Spearman"}]
SCORES = {"electra": {"sst2": [81.2, 80.4, 82.0], "stsb": [60.04, 58.96, 61.33]},
          "mlm": {"sst2": [78.25]},  # incomplete: STS-B not fine-tuned yet
          "none": {"sst2": [70.0, 71.4, 72.0], "stsb": [20.0, 21.2, 22.0]}}


def pretrain(corpus: Path, out: Path, *extra: object) -> Path:
    cli_ok("pretrain", "--corpus", corpus, "--out", out, *TINY, "--batch-size", 8, "--seed", 0,
           "--train.log_every", 2, "--train.eval_batches", 1, *extra)
    return out


@pytest.fixture(scope="module")
def electra(fixed_corpus: Path, tmp_path_factory) -> Path:
    return pretrain(fixed_corpus, tmp_path_factory.mktemp("report-runs") / "electra-tiny", "--objective", "electra",
                    "--steps", 20, "--train.eval_every", 10, "--save-every", 20)


@pytest.fixture(scope="module")
def mlm_sop(fixed_corpus: Path, tmp_path_factory) -> Path:
    return pretrain(fixed_corpus, tmp_path_factory.mktemp("report-runs") / "mlm-sop", "--objective", "mlm", "--sop",
                    "--steps", 10, "--train.eval_every", 5, "--save-every", 10)


def entry(values: list[float]) -> dict:
    return {"values": values, "median": statistics.median(values), "min": min(values), "max": max(values),
            "std": statistics.pstdev(values)}


def make_study(root: Path, name: str, electra: Path, mlm_sop: Path, scale: float = 1.0) -> Path:
    """A study dir: the real runs copied to pretrain/electra and pretrain/mlm, and its results.json.

    `scale` multiplies the pretrained setups' FLOPs and steps (another budget of the same study).
    """
    study = root / name
    for setup, run in (("electra", electra), ("mlm", mlm_sop)):
        shutil.copytree(run, study / "pretrain" / setup, ignore=shutil.ignore_patterns("checkpoints"))
    setups = []
    for setup, run in (("electra", electra), ("mlm", mlm_sop), ("none", None)):
        summary = json.loads((run / "summary.json").read_text()) if run else {}
        scores = {task: entry(values) for task, values in SCORES[setup].items()}
        complete = len(scores) == len(TASKS)
        setups.append({
            "name": setup, "label": {"electra": "ELECTRA", "mlm": "BERT MLM+SOP", "none": "no pre-training"}[setup],
            "objective": setup, "size": "tiny", "pretrained": run is not None,
            "run": f"pretrain/{setup}" if run else None, "parameters": 1_234_567 if run else None,
            "steps": int(summary.get("step", 0) * scale), "paper_flops": summary.get("paper_flops", 0) * scale,
            "model_flops": summary.get("model_flops", 0) * scale, "train_seconds": 1.5, "scores": scores,
            "average": statistics.mean(s["median"] for s in scores.values()) if complete else None,
            "complete": complete})
    results = {"format": "electrolite-study", "format_version": 1, "name": name,
               "budget": {"kind": "paper_flops", "value": 3e11 * scale, "text": f"{3e11 * scale:.0e} FLOPs"},
               "seeds": 3, "tasks": TASKS, "setups": setups}
    (study / "results.json").write_text(json.dumps(results, indent=1))
    return study


@pytest.fixture(scope="module")
def study(electra: Path, mlm_sop: Path, tmp_path_factory) -> Path:
    return make_study(tmp_path_factory.mktemp("report-studies"), "books", electra, mlm_sop)


@pytest.fixture(scope="module")
def big_study(electra: Path, mlm_sop: Path, tmp_path_factory) -> Path:
    """The same study at a budget 4 × larger (same runs, FLOPs and steps × 4 in results.json)."""
    return make_study(tmp_path_factory.mktemp("report-studies"), "books-4x", electra, mlm_sop, scale=4.0)


@pytest.fixture(scope="module")
def rendered(electra: Path, study: Path, big_study: Path, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("report-out") / "report"
    r = cli_ok("report", electra, study, big_study, "--out", out)
    return out, r.out


def flops(v: float) -> str:
    """As the spec writes FLOPs: ``3.0e15``, ``5.6e9``."""
    mantissa, exponent = f"{v:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 10_000, f"{path}: {len(data)} bytes"
    image = matplotlib.image.imread(path)  # (H, W, RGBA)
    assert image.ndim == 3 and image.shape[2] == 4 and image.shape[0] > 300 and image.shape[1] > 500, image.shape
    assert image[..., :3].std() > 0.05  # not a blank canvas


def table(md: str, study_name: str) -> dict[str, list[str]]:
    """Setup label → the cells of its row in the markdown table of the study."""
    section = md.split(f"## Study {study_name}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split(" | ") for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| --- |")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


def assert_no_out(out: Path) -> None:
    assert not out.exists()
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_files_and_pngs(rendered: tuple[Path, str]):
    out, stdout = rendered
    pngs = {"curves-electra-tiny.png", "curves-books-electra.png", "curves-books-mlm.png",
            "curves-books-4x-electra.png", "curves-books-4x-mlm.png", "compare-curves.png", "score-vs-flops.png",
            "scores-per-task.png"}
    assert {p.name for p in out.iterdir()} == pngs | {"report.md", "report.json"}
    assert stdout.strip() == f"wrote {out / 'report.md'} (8 PNG plots)"
    for name in pngs:
        assert_png(out / name)
    md = (out / "report.md").read_text()
    links = {line.split("](")[1].rstrip(")") for line in md.splitlines() if line.startswith("![")}
    assert links == pngs  # every PNG is shown, by a relative link
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".report.")]


def test_table_equals_results_json(rendered: tuple[Path, str], study: Path):
    out, _ = rendered
    results = json.loads((study / "results.json").read_text())
    rows = table((out / "report.md").read_text(), "books")
    electra, mlm, none = results["setups"]
    assert rows == {
        "Setup": ["Params", "Steps", "Pre-train FLOPs", "SST-2 acc", "STS-B Spearman", "Average"],
        "ELECTRA": ["1.2M", "20", flops(electra["paper_flops"]), "81.2 (80.4–82.0)", "60.0 (59.0–61.3)", "70.6"],
        "BERT MLM+SOP (incomplete)": ["1.2M", "10", flops(mlm["paper_flops"]),
                                      "78.2 (78.2–78.2)", "–", "–"],
        "no pre-training": ["–", "0", "0", "71.4 (70.0–72.0)", "21.2 (20.0–22.0)", "46.3"]}
    assert electra["average"] == pytest.approx((81.2 + 60.04) / 2) and none["average"] == pytest.approx(46.3)
    tables = json.loads((out / "report.json").read_text())["studies"]
    assert [t["name"] for t in tables] == ["books", "books-4x"]
    assert len(tables[0]["rows"]) == len(results["setups"])
    for row, setup in zip(tables[0]["rows"], results["setups"]):
        assert row["average"] == setup["average"] and row["paper_flops"] == setup["paper_flops"]
        assert row["scores"] == {t["name"]: {k: setup["scores"][t["name"]][k] for k in ("median", "min", "max")}
                                 if t["name"] in setup["scores"] else None for t in TASKS}


def test_run_lines(rendered: tuple[Path, str], electra: Path, mlm_sop: Path):
    out, _ = rendered
    train, valid = read_metrics(electra)
    line = next(x for x in (out / "report.md").read_text().splitlines() if x.startswith("- **electra-tiny**"))
    v = valid[-1]
    assert line == (f"- **electra-tiny** (electra tiny), `{electra}`: step 20; train loss {train[-1]['loss']:.4f}; "
                    f"validation at step 20: loss {v['valid_loss']:.4f}, MLM accuracy {v['valid_mlm_accuracy']:.4f}, "
                    f"RTD AUC {v['valid_rtd_auc']:.4f}, RTD accuracy {v['valid_rtd_accuracy']:.4f}. "
                    "[curves](curves-electra-tiny.png)")
    runs = {r["name"]: r for r in json.loads((out / "report.json").read_text())["runs"]}
    assert runs["electra-tiny"]["final_loss"] == train[-1]["loss"]
    assert runs["books-mlm"]["last_valid"]["valid_sop_accuracy"] == read_metrics(mlm_sop)[1][-1]["valid_sop_accuracy"]


def test_curves_draw_the_runs_numbers(electra: Path, mlm_sop: Path, tmp_path: Path):
    train, valid = read_metrics(electra)
    assert [m["step"] for m in valid] == [0, 10, 20] and len(train) == 10
    fig = plots.curves(report.read_run(electra, "e"), tmp_path / "e.png")
    loss, mlm_acc, auc = fig.axes[:3]
    raw, smoothed = loss.lines
    np.testing.assert_array_equal(raw.get_xdata(), [m["paper_flops"] for m in train])
    np.testing.assert_array_equal(raw.get_ydata(), [m["loss"] for m in train])
    np.testing.assert_allclose(smoothed.get_ydata(), plots.smooth([m["loss"] for m in train], 3))  # √10 → 3 points
    np.testing.assert_array_equal(mlm_acc.lines[0].get_ydata(), [m["valid_mlm_accuracy"] for m in valid])
    np.testing.assert_array_equal(auc.lines[0].get_xdata(), [m["paper_flops"] for m in valid])
    np.testing.assert_array_equal(auc.lines[0].get_ydata(), [m["valid_rtd_auc"] for m in valid])
    # MLM + SOP: no RTD panel, a SOP one
    fig = plots.curves(report.read_run(mlm_sop, "m"), tmp_path / "m.png")
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == [
        "training loss", "validation generator / MLM accuracy", "validation SOP accuracy"]


def test_smooth():
    y = np.array([1.0, 2.0, 3.0, np.nan, 5.0, 7.0])
    np.testing.assert_allclose(plots.smooth(y, 2), [1.0, 1.5, 2.5, 3.0, 5.0, 6.0])
    np.testing.assert_allclose(plots.smooth(y, 1), [1.0, 2.0, 3.0, np.nan, 5.0, 7.0])
    assert np.isnan(plots.smooth([np.nan, np.nan], 5)).all()


def test_several_budgets_join_a_setup(electra: Path, study: Path, big_study: Path, rendered: tuple[Path, str],
                                     tmp_path: Path):
    studies = [report.read_study(big_study), report.read_study(study)]
    fig = plots.score_vs_flops(studies, tmp_path / "s.png")
    lines = {line.get_label(): line for line in fig.axes[0].lines}
    flops = json.loads((electra / "summary.json").read_text())["paper_flops"]
    average = (81.2 + 60.04) / 2
    # ELECTRA at both budgets, one line in FLOPs order; BERT MLM+SOP has no average (incomplete): no marker
    np.testing.assert_allclose(lines["ELECTRA"].get_xdata(), [flops, 4 * flops])
    np.testing.assert_allclose(lines["ELECTRA"].get_ydata(), [average, average])
    assert lines["ELECTRA"].get_linestyle() == "-" and "BERT MLM+SOP" not in lines
    for name in ("books-4x", "books"):  # the no-pre-training rows: dashed horizontal lines
        baseline = lines[f"no pre-training ({name})"]
        assert baseline.get_linestyle() == "--" and list(baseline.get_ydata()) == [pytest.approx(46.3)] * 2
    fig = plots.scores_per_task(studies, TASKS, tmp_path / "t.png")
    bars = {c.get_label(): c for c in fig.axes[0].containers}  # SST-2: errorbar containers by setup
    np.testing.assert_allclose(bars["BERT MLM+SOP"].lines[0].get_ydata(), [78.25, 78.25])
    np.testing.assert_allclose(bars["ELECTRA"].lines[0].get_ydata(), [81.2, 81.2])
    for segment in bars["ELECTRA"].lines[2][0].get_segments():  # min–max error bars: ((x, min), (x, max))
        np.testing.assert_allclose(segment[:, 1], [80.4, 82.0])
    # the report of both budgets has one table each
    out, _ = rendered
    assert [t["name"] for t in json.loads((out / "report.json").read_text())["studies"]] == ["books", "books-4x"]
    assert table((out / "report.md").read_text(), "books-4x")["ELECTRA"][1] == "80"  # 4 × 20 steps


def test_previous_report_is_replaced(electra: Path, tmp_path: Path):
    out = tmp_path / "out"
    cli_ok("report", electra, "--out", out)
    (out / "curves-old.png").write_bytes(b"stale")
    r = cli_ok("report", electra, "--out", out)
    assert r.out.strip() == f"wrote {out / 'report.md'} (1 PNG plots)"
    assert sorted(p.name for p in out.iterdir()) == ["curves-electra-tiny.png", "report.json", "report.md"]
    assert_png(out / "curves-electra-tiny.png")


def test_out_that_is_not_a_report_is_refused(electra: Path, tmp_path: Path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    before = snapshot(out)
    user_error(cli("report", electra, "--out", out),
               f"{out} exists and is not a previous report (no report.md); choose a new --out (nothing was overwritten)")
    assert snapshot(out) == before


def test_failed_render_leaves_nothing(electra: Path, tmp_path: Path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("render failed")

    monkeypatch.setattr(plots, "curves", broken)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="render failed"):
        cli("report", electra, "--out", out)
    assert_no_out(out)
    # a previous report stays as it was
    monkeypatch.undo()
    cli_ok("report", electra, "--out", out)
    before = snapshot(out)
    monkeypatch.setattr(plots, "compare_curves", broken)
    with pytest.raises(RuntimeError):
        cli("report", electra, electra, "--out", out)
    assert snapshot(out) == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_bad_dirs(electra: Path, study: Path, tmp_path: Path):
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    user_error(cli("report", empty, "--out", out), f"{empty}: neither metrics.jsonl nor results.json; {EXPECTED}")
    (empty / "study.yaml").write_text("name: started\n", encoding="utf-8")
    user_error(cli("report", empty, "--out", out),
               f"{empty}: a study with no results.json yet; run `electrolite study` on it first")
    user_error(cli("report", tmp_path / "nope", "--out", out), f"{tmp_path / 'nope'}: no such directory; {EXPECTED}")

    run = tmp_path / "run"
    shutil.copytree(electra, run, ignore=shutil.ignore_patterns("checkpoints"))
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:2] + [lines[2][:40]] + lines[3:]) + "\n")
    msg = user_error(cli("report", electra, run, "--out", out))
    assert msg.startswith(f"{run / 'metrics.jsonl'} line 3: not valid JSON"), msg
    (run / "metrics.jsonl").write_text("\n".join(lines[:4] + [lines[4].replace('"loss": ', '"loss": "x", "_": ')]))
    user_error(cli("report", run, "--out", out), f"{run / 'metrics.jsonl'} line 5: loss: expected a number, got 'x'")
    (run / "metrics.jsonl").write_text('{"step": 1, "epoch": 0, "loss": 0.5}\n')  # a fine-tuned task dir's
    user_error(cli("report", run, "--out", out),
               f"{run / 'metrics.jsonl'} line 1: no paper_flops; expected a pre-training run's metrics line")
    assert_no_out(out)


def test_bad_results_json(study: Path, tmp_path: Path):
    out = tmp_path / "out"
    bad = tmp_path / "seeds"
    bad.mkdir()
    (bad / "results.json").write_text(json.dumps({"task": "sst2", "seeds": [0, 1], "median": 0.8}))  # finetune --seeds
    user_error(cli("report", bad, "--out", out), f"{bad / 'results.json'}: format: expected 'electrolite-study' "
               "(results of `electrolite study`), got None")
    (bad / "results.json").write_text("{")
    assert user_error(cli("report", bad, "--out", out)).startswith(f"{bad / 'results.json'}: not valid JSON")
    results = json.loads((study / "results.json").read_text())
    for change, message in (
            (lambda r: r.update(format_version=2), "format_version: expected 1, got 2 (written by a newer electrolite?)"),
            (lambda r: r["setups"][0]["scores"]["sst2"].update(median="81"),
             "setups[0].scores.sst2.median: expected a finite number or null, got '81'"),
            (lambda r: r["setups"][2].pop("complete"), "setups[2].complete: missing"),
            (lambda r: r["setups"][0].update(run="../elsewhere"),
             f"setups[0].run: expected a path inside {bad}, got '../elsewhere'")):
        broken = json.loads(json.dumps(results))
        change(broken)
        (bad / "results.json").write_text(json.dumps(broken))
        user_error(cli("report", bad, "--out", out), f"{bad / 'results.json'}: {message}")
    assert_no_out(out)


def test_without_matplotlib(electra: Path, tmp_path: Path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    out = tmp_path / "out"
    user_error(cli("report", electra, "--out", out),
               "reports need matplotlib: install the report extra (pip install 'electrolite[report]')")
    assert_no_out(out)
