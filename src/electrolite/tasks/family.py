"""A task family as an object: what its model outputs, how they are scored and turned into prediction rows,
and what a Hugging Face checkpoint of it says about its labels.

The families are ``classification.CLASSIFICATION`` and ``REGRESSION``, ``tagging.TAGGING`` and ``qa.QA``;
``tasks.family_of(name)`` finds one by the name a task dir records. A new family is one of these in its own
module, registered in ``tasks/__init__.py``; nothing outside ``tasks/`` branches on a family's name.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np

Raw = dict[str, list[np.ndarray]]
"""The model's outputs per example (``tasks.predict.run_batches``): ``outputs`` of the family, in input order."""
Run = Callable[[Any], Raw]
"""Runs the model over a family's features (``run_batches`` with a model bound)."""


class Family:
    """What every task family provides; the subclasses fill it in."""

    name: str = ""
    outputs: tuple[str, ...] = ("logits",)
    """The TaskModel outputs the family reads."""
    per_token: bool = False
    """The outputs have one row per token: each example's are cut to its length."""
    hf_labelled: bool = True
    """A Hugging Face checkpoint of the family carries id2label (classification and tagging do)."""

    def score(self, task: Any, raw: Raw, examples: list, features: Any, labels: Sequence[str]
              ) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """(metrics, one prediction row per example) of one evaluation split (predictions-<split>.jsonl)."""
        raise NotImplementedError

    def predict(self, task: Any, records: list[dict[str, str]], tokenizer: Any, labels: Sequence[str], run: Run
                ) -> Iterator[dict[str, Any]]:
        """One output row per input record (``electrolite predict``'s JSON lines); `run` runs the model."""
        raise NotImplementedError

    def hf_fields(self, labels: Sequence[str]) -> dict[str, Any]:
        """The config.json fields a Hugging Face export of the family needs (id2label, problem_type)."""
        return {}

    def hf_regression(self, config: dict[str, Any], num_labels: int) -> bool:
        """Whether a Hugging Face checkpoint of this family's architecture (config.json `config`) is a
        regression model (a *ForSequenceClassification with one output or problem_type regression)."""
        return False

    def hf_record(self, labels: list[str], max_positions: int) -> dict[str, Any]:
        """The task record (as in a task dir's config.yaml) of a fine-tuned Hugging Face checkpoint that
        electrolite did not write: the generic task of the family."""
        raise NotImplementedError


def record_defaults(family: Family, task: str, text_fields: list[str], labels: list[str], max_length: int
                    ) -> dict[str, Any]:
    """A task record with the fields every family shares; QA overrides its window settings."""
    return {"task": task, "family": family.name, "labels": labels, "head": "", "text_fields": text_fields,
            "label_column": "label", "max_length": max_length, "doc_stride": 0, "max_query_length": 0,
            "max_answer_length": 0, "source": "hf", "note": ""}
