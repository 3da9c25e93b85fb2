"""The task registry: names, families, metrics and ELECTRA's fine-tuning defaults."""

import pytest

from electrolite.errors import UserError
from electrolite.tasks import FAMILIES, TASKS, get_task, metrics

GLUE = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")


def test_names_and_families():
    assert set(GLUE) | {"text-classification", "conll2003", "token-classification", "squad1", "squad2"} == set(TASKS)
    for task in TASKS.values():
        assert task.family in FAMILIES and task.name == get_task(task.name).name
        assert task.files[0][0] == "train" and task.eval_splits
    assert get_task("stsb").family == "regression" and get_task("conll2003").family == "tagging"
    assert get_task("squad2").family == "qa" and get_task("mnli").eval_splits == ("dev_matched", "dev_mismatched")
    names = "cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli, text-classification, conll2003, " \
            "token-classification, squad1, squad2"
    with pytest.raises(UserError, match=rf"unknown task 'glue' \(tasks: {names}\)"):
        get_task("glue")


def test_electra_defaults():
    epochs = {name: task.epochs for name, task in TASKS.items()}
    assert epochs == {**{name: 3 for name in TASKS}, "rte": 10, "stsb": 10, "squad1": 2, "squad2": 2}
    for name, task in TASKS.items():
        if task.family == "qa":
            lengths = (task.max_length, task.doc_stride, task.max_query_length, task.max_answer_length)
            assert lengths == (384, 128, 64, 30)
        else:
            assert task.max_length == 128


def test_official_metrics():
    gold, pred = [1, 0, 1, 1, 0], [1, 1, 1, 0, 0]
    assert get_task("cola").metrics(gold, pred) == pytest.approx({"mcc": 1 / 6, "accuracy": 0.6})
    for name in ("mrpc", "qqp"):
        assert get_task(name).metrics(gold, pred) == pytest.approx({"accuracy": 0.6, "f1": 2 / 3})
    for name in ("sst2", "mnli", "qnli", "rte", "wnli"):
        assert get_task(name).metrics(gold, pred) == {"accuracy": 0.6}
    assert set(get_task("stsb").metrics([1.0, 2.0, 3.0], [1.0, 3.0, 2.0])) == {"pearson", "spearman"}
    assert get_task("conll2003").metrics([["B-PER", "O"]], [["B-PER", "O"]])["f1"] == 1.0
    for task in TASKS.values():
        assert task.main_metric in {"mcc", "accuracy", "f1", "spearman"}
    assert get_task("cola").main_metric == "mcc" and get_task("stsb").main_metric == "spearman"
    assert get_task("squad1").main_metric == "f1" and get_task("conll2003").main_metric == "f1"
    assert get_task("text-classification").metrics is metrics.multiclass_metrics


def test_text_fields_for_prediction_input():
    assert get_task("sst2").text_fields == ("sentence",)
    assert get_task("mnli").text_fields == ("premise", "hypothesis")
    assert get_task("squad1").text_fields == ("question", "context")
    custom = get_task("text-classification").with_options(text_columns=["q", "a"], label_column="y")
    assert custom.text_fields == ("q", "a") and custom.label_column == "y"
    with pytest.raises(UserError, match="one or two text columns, got 3"):
        get_task("text-classification").with_options(text_columns=["a", "b", "c"])
