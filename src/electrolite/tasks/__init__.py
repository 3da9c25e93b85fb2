"""The built-in fine-tuning tasks: what each reads, how it is scored, and its defaults.

``get_task(name)`` gives a ``Task``; ``task.load(data=DIR)`` (or ``train=FILE, dev=FILE``)
reads and checks its files into ``TaskData``; ``task.encode(examples, tokenizer, labels)``
gives the ``Features`` a trainer batches; ``task.metrics`` scores predictions:

* classification: ``metrics(gold_ids, predicted_ids)``; regression: ``metrics(gold, predicted)``;
* tagging: ``metrics(gold_tags, predicted_tags)`` (one tag list per sentence; ``word_tags``
  turns per-token predictions into these);
* qa: ``metrics(examples, decode_qa(...), threshold=0.0)``.

Defaults are ELECTRA's: 3 epochs (10 for RTE and STS-B, 2 for SQuAD), max length 128
(QA: 384 with doc stride 128, questions cut to 64 tokens, answers up to 30 tokens).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from tokenizers import Tokenizer

from electrolite.errors import UserError
from electrolite.tasks import metrics as M
from electrolite.tasks.classification import (
    CLASSIFICATION,
    REGRESSION,
    Example,
    Features,
    GlueLayout,
    check_labels,
    discover_labels,
    encode_classification,
    read_glue_tsv,
    read_table,
)
from electrolite.tasks.family import Family
from electrolite.tasks.qa import QA, QAExample, QAFeatures, QAPrediction, decode_qa, encode_qa, read_squad, squad_metrics
from electrolite.tasks.tagging import (
    TAGGING,
    Sentence,
    TaggingFeatures,
    char_entities,
    check_tags,
    encode_tagging,
    read_conll,
    split_words,
    tag_set,
    word_tags,
)

FAMILY_OBJECTS: dict[str, Family] = {f.name: f for f in (CLASSIFICATION, REGRESSION, TAGGING, QA)}
FAMILIES = tuple(FAMILY_OBJECTS)
CONLL2003_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
SQUAD_EVAL_ARTICLES = 10  # when --data holds only a dev file, its last 10 articles are held out


def family_of(name: str) -> Family:
    """The task family a task dir or a Hugging Face architecture names (classification, regression, tagging, qa)."""
    try:
        return FAMILY_OBJECTS[name]
    except KeyError:
        raise UserError(f"unknown task family {name!r} (known: {', '.join(FAMILY_OBJECTS)})") from None


@dataclass
class TaskData:
    """A task's examples, read and checked.

    Attributes:
        train: training examples (empty when loaded with ``with_train=False``).
        evals: split name → examples; the first split selects the best checkpoint.
        labels: label (tag) names by id; None for regression and QA.
        files: split name → the file it was read from.
        note: how the data was split, to print wherever a number is reported ("" if nothing to say).
    """

    train: list
    evals: dict[str, list]
    labels: tuple[str, ...] | None
    files: dict[str, str]
    note: str = ""


@dataclass(frozen=True)
class Task:
    """A task: its family, files, labels, metrics and fine-tuning defaults."""

    name: str
    family: str
    """classification, regression, tagging or qa."""
    description: str
    text_fields: tuple[str, ...]
    """Input field names (JSON lines for ``predict``): e.g. ("sentence1", "sentence2"), ("question", "context")."""
    labels: tuple[str, ...] | None
    """Fixed label names by id; None when found in the training data (or regression, QA)."""
    metrics: Callable[..., dict[str, float]]
    main_metric: str
    """The metric that picks the best checkpoint."""
    files: tuple[tuple[str, tuple[str, ...]], ...]
    """(split, candidate file names in --data DIR); "train" first, then the evaluation splits."""
    epochs: int = 3
    max_length: int = 128
    doc_stride: int = 0
    max_query_length: int = 0
    max_answer_length: int = 0
    generic: bool = False
    """Reads the user's own files (``--train``/``--dev``); text-classification also takes columns."""
    text_columns: tuple[str, ...] = ()
    label_column: str | None = None
    layout: GlueLayout | None = None
    squad_version: int = 0

    @property
    def eval_splits(self) -> tuple[str, ...]:
        return tuple(split for split, _ in self.files[1:])

    def with_options(self, text_columns: Sequence[str] | None = None, label_column: str | None = None,
                     regression: bool | None = None) -> Task:
        """text-classification's settings: the text column(s), the label column, a numeric label.

        Raises:
            UserError: the options given to another task, or more than two text columns.
        """
        if text_columns is None and label_column is None and regression is None:
            return self
        if self.name != "text-classification":
            raise UserError("text columns, label column and regression are options of text-classification, "
                            f"not {self.name}")
        text_columns = tuple(text_columns) if text_columns is not None else self.text_columns
        if text_columns and not 1 <= len(text_columns) <= 2:
            raise UserError(f"text-classification takes one or two text columns, got {len(text_columns)}")
        changes: dict[str, Any] = {"text_columns": text_columns, "text_fields": text_columns or self.text_fields,
                                   "label_column": label_column or self.label_column}
        if regression:
            changes.update(family="regression", metrics=M.correlation_metrics, main_metric="spearman")
        elif regression is not None:
            changes.update(family="classification", metrics=M.multiclass_metrics, main_metric="accuracy")
        return dataclasses.replace(self, **changes)

    # ----------------------------------------------------------------------------------------

    def load(self, data: str | os.PathLike | None = None, *, train: str | os.PathLike | None = None,
             dev: str | os.PathLike | None = None, labels: Sequence[str] | None = None,
             with_train: bool = True) -> TaskData:
        """Reads and checks the task's files.

        Args:
            data: a folder holding the task's files (see ``files``; a GLUE task also finds its
                folder inside the GLUE root), or one file, read as the evaluation split.
            train: the training file (instead of finding it in ``data``).
            dev: the evaluation file (instead of finding it in ``data``).
            labels: the label names of a fine-tuned model: evaluation labels are checked
                against these instead of the training data's.
            with_train: read the training file too (False for ``evaluate``).

        Raises:
            UserError: a missing file, malformed data, an evaluation label training never saw.
        """
        if self.name == "text-classification" and not (self.text_columns and self.label_column):
            raise UserError("text-classification needs the text column(s) and the label column "
                            "(--text-columns A[,B] --label-column C)")
        paths, split = self._locate(data, train, dev, with_train)
        if split:
            return self._split_squad(paths[self.eval_splits[0]], with_train)
        read = {split: self._read(path) for split, path in paths.items()}
        train_examples = read.pop("train", [])
        return TaskData(train_examples, read, self._labels(train_examples, read, labels), paths)

    def _locate(self, data, train, dev, with_train: bool) -> tuple[dict[str, str], bool]:
        """(split → path, whether to split a SQuAD dev file into training and held-out articles).

        Explicit ``train`` / ``dev`` files win over what ``data`` holds; a file given as ``data``
        is the evaluation file. SQuAD is split when its folder has no training file (for
        ``evaluate`` too, so that a model is scored on the articles it was not trained on), or
        when training is wanted and only an evaluation file is given.
        """
        first_eval = self.eval_splits[0]
        folder, found = None, {}
        if data is not None:
            data = os.fspath(data)
            if os.path.isdir(data):
                folder = data
                if self.layout is not None and not os.path.isfile(os.path.join(data, "train.tsv")) \
                        and os.path.isdir(os.path.join(data, self.layout.folder)):
                    folder = os.path.join(data, self.layout.folder)  # the GLUE root
                for split, candidates in self.files:
                    hits = [os.path.join(folder, n) for n in candidates if os.path.isfile(os.path.join(folder, n))]
                    if hits:
                        found[split] = hits[0]
            elif os.path.isfile(data):
                dev = data if dev is None else dev
            else:
                raise UserError(f"{data}: no such file or directory")
        paths: dict[str, str] = {}
        if dev is not None:
            paths[first_eval] = os.fspath(dev)
        else:
            paths.update({split: path for split, path in found.items() if split != "train"})
        if train is not None:
            paths["train"] = os.fspath(train)
        elif "train" in found:
            paths["train"] = found["train"]
        for path in paths.values():
            if not os.path.isfile(path):
                raise UserError(f"{path}: no such file")
        names = dict(self.files)
        if first_eval not in paths:
            raise UserError(f"{folder}: no {' or '.join(names[first_eval])} for the {self.name} task" if folder
                            else f"{self.name}: no evaluation file (give --data DIR or --dev FILE)")
        if self.family == "qa" and "train" not in paths and (with_train or dev is None):
            return {first_eval: paths[first_eval]}, True
        if "train" not in paths and with_train:
            raise UserError(f"{folder}: no {' or '.join(names['train'])} for the {self.name} task" if folder
                            else f"{self.name}: no training file (give --data DIR or --train FILE)")
        if not with_train:
            paths.pop("train", None)
        return {split: paths[split] for split, _ in self.files if split in paths}, False  # train first

    def _read(self, path: str) -> list:
        if self.layout is not None:
            return read_glue_tsv(path, self.layout, self.labels)
        if self.name == "text-classification":
            return read_table(path, self.text_columns, self.label_column, self.family == "regression")
        if self.family == "tagging":
            return read_conll(path)
        return [ex for article in read_squad(path, self.squad_version) for ex in article]

    def _labels(self, train: list, evals: dict[str, list], given) -> tuple[str, ...] | None:
        if self.family in ("regression", "qa"):
            return None
        check = check_tags if self.family == "tagging" else check_labels
        if self.labels is not None:  # fixed: GLUE checks while reading
            if self.family == "tagging":
                for examples in [train, *evals.values()]:
                    check(examples, self.labels)
            return self.labels
        if given is not None:
            labels, origin = tuple(given), "the model's labels"
        elif train:
            origin = "the training data"
            labels = tag_set(train) if self.family == "tagging" else discover_labels(ex.label for ex in train)
        else:
            raise UserError(f"{self.name}: labels come from the training data; give the training file or a model")
        for examples in [train, *evals.values()]:
            check(examples, labels, origin)
        return labels

    def _split_squad(self, path: str, with_train: bool) -> TaskData:
        articles = read_squad(path, self.squad_version)
        if len(articles) <= SQUAD_EVAL_ARTICLES:
            raise UserError(f"{path}: {len(articles)} articles, too few to hold out the last {SQUAD_EVAL_ARTICLES} "
                            "for evaluation (give a training file too)")
        n_train = len(articles) - SQUAD_EVAL_ARTICLES
        version = "v1.1" if self.squad_version == 1 else "v2.0"
        note = (f"trained on the first {n_train} articles of SQuAD {version} dev, "
                f"evaluated on the last {SQUAD_EVAL_ARTICLES}")
        train = [ex for article in articles[:n_train] for ex in article] if with_train else []
        evals = {self.eval_splits[0]: [ex for article in articles[n_train:] for ex in article]}
        files = {"train": path, self.eval_splits[0]: path} if with_train else {self.eval_splits[0]: path}
        return TaskData(train, evals, None, files, note)

    # ----------------------------------------------------------------------------------------

    def encode(self, examples: Sequence, tokenizer: Tokenizer, labels: Sequence[str] | None = None,
               training: bool = False) -> Features:
        """Encodes examples with the task's lengths.

        Args:
            examples: ``Example``s, ``Sentence``s or ``QAExample``s of this task.
            tokenizer: the model's tokenizer.
            labels: label names by id (classification, tagging).
            training: QA only: add answer positions.
        """
        label_map = {name: i for i, name in enumerate(labels)} if labels is not None else None
        if self.family in ("classification", "regression"):
            return encode_classification(examples, tokenizer, self.max_length,
                                         None if self.family == "regression" else label_map)
        if self.family == "tagging":
            return encode_tagging(examples, tokenizer, self.max_length, label_map)
        return encode_qa(examples, tokenizer, self.max_length, self.doc_stride, self.max_query_length, training)


# --------------------------------------------------------------------------------------------
# The registry

_GLUE = {  # name: (layout, labels, text fields, metrics, main metric, epochs, description)
    "cola": (GlueLayout("CoLA", ("3",), "1", header=False), ("0", "1"), ("sentence",), M.mcc_metrics, "mcc", 3,
             "CoLA: grammatical acceptability (Matthews correlation)"),
    "sst2": (GlueLayout("SST-2", ("sentence",), "label"), ("0", "1"), ("sentence",), M.accuracy_metrics,
             "accuracy", 3, "SST-2: sentiment of movie-review sentences (accuracy)"),
    "mrpc": (GlueLayout("MRPC", ("#1 String", "#2 String"), "Quality"), ("0", "1"), ("sentence1", "sentence2"),
             M.accuracy_f1_metrics, "accuracy", 3, "MRPC: paraphrase pairs (accuracy and F1)"),
    "stsb": (GlueLayout("STS-B", ("sentence1", "sentence2"), "score"), None, ("sentence1", "sentence2"),
             M.correlation_metrics, "spearman", 10, "STS-B: sentence similarity 0-5 (Pearson and Spearman)"),
    "qqp": (GlueLayout("QQP", ("question1", "question2"), "is_duplicate"), ("0", "1"), ("question1", "question2"),
            M.accuracy_f1_metrics, "accuracy", 3, "QQP: duplicate question pairs (accuracy and F1)"),
    "mnli": (GlueLayout("MNLI", ("sentence1", "sentence2"), "gold_label",
                        (("dev_matched", "dev_matched.tsv"), ("dev_mismatched", "dev_mismatched.tsv"))),
             ("contradiction", "entailment", "neutral"), ("premise", "hypothesis"), M.accuracy_metrics,
             "accuracy", 3, "MNLI: entailment, matched and mismatched dev (accuracy)"),
    "qnli": (GlueLayout("QNLI", ("question", "sentence"), "label"), ("entailment", "not_entailment"),
             ("question", "sentence"), M.accuracy_metrics, "accuracy", 3,
             "QNLI: does the sentence answer the question (accuracy)"),
    "rte": (GlueLayout("RTE", ("sentence1", "sentence2"), "label"), ("entailment", "not_entailment"),
            ("sentence1", "sentence2"), M.accuracy_metrics, "accuracy", 10, "RTE: textual entailment (accuracy)"),
    "wnli": (GlueLayout("WNLI", ("sentence1", "sentence2"), "label"), ("0", "1"), ("sentence1", "sentence2"),
             M.accuracy_metrics, "accuracy", 3, "WNLI: Winograd pronoun entailment (accuracy)"),
}

_GENERIC_STEMS = {"train": ("train",), "dev": ("dev", "valid", "validation")}


def _generic_files(extensions: tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((split, tuple(f"{stem}{ext}" for stem in stems for ext in extensions))
                 for split, stems in _GENERIC_STEMS.items())


def _build() -> dict[str, Task]:
    tasks = {}
    for name, (layout, labels, fields_, metric, main, epochs, description) in _GLUE.items():
        family = "regression" if labels is None else "classification"
        files = (("train", ("train.tsv",)), *((split, (file,)) for split, file in layout.evals))
        tasks[name] = Task(name, family, description, fields_, labels, metric, main, files,
                           epochs=epochs, layout=layout)
    tasks["text-classification"] = Task(
        "text-classification", "classification",
        "your own CSV, TSV or JSONL: named text column(s) and a label column (--regression for a number)",
        ("text",), None, M.multiclass_metrics, "accuracy", _generic_files((".csv", ".tsv", ".jsonl")), generic=True)
    tasks["conll2003"] = Task(
        "conll2003", "tagging", "CoNLL-2003 English NER, IOB2 (entity-level F1)", ("text",), CONLL2003_TAGS,
        M.entity_scores, "f1", (("train", ("train.txt", "eng.train")), ("dev", ("valid.txt", "dev.txt", "eng.testa"))))
    tasks["token-classification"] = Task(
        "token-classification", "tagging",
        "your own column files (token first, tag last, blank line between sentences) or JSONL of tokens and tags",
        ("text",), None, M.entity_scores, "f1", _generic_files((".txt", ".conll", ".tsv", ".jsonl")), generic=True)
    for version, suffix in ((1, "v1.1"), (2, "v2.0")):
        tasks[f"squad{version}"] = Task(
            f"squad{version}", "qa", f"SQuAD {suffix} extractive QA (exact match and F1)", ("question", "context"),
            None, partial(squad_metrics, version=version), "f1",
            (("train", (f"train-{suffix}.json",)), ("dev", (f"dev-{suffix}.json",))), epochs=2, max_length=384,
            doc_stride=128, max_query_length=64, max_answer_length=30, squad_version=version)
    return tasks


TASKS: Mapping[str, Task] = _build()


def get_task(name: str) -> Task:
    """The built-in task called ``name``.

    Raises:
        UserError: an unknown name (the message lists the known ones).
    """
    if name not in TASKS:
        raise UserError(f"unknown task {name!r} (tasks: {', '.join(TASKS)})")
    return TASKS[name]


__all__ = [
    "CONLL2003_TAGS", "FAMILIES", "TASKS", "Example", "Features", "QAExample", "QAFeatures", "QAPrediction",
    "Sentence", "Task", "TaskData", "TaggingFeatures", "char_entities", "decode_qa", "get_task", "split_words",
    "word_tags",
]
