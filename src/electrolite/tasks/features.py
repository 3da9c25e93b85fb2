"""What the three task families share: reading a data file's text, a tokenizer prepared for a task's
length, and ``Features`` (encoded sequences kept unpadded with their lengths, padded per batch)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from tokenizers import Tokenizer

from electrolite.errors import UserError
from electrolite.heads import IGNORE_INDEX


def read_text(path: str) -> str:
    """The whole file as text: UTF-8, a leading BOM dropped, ``\\r\\n`` made ``\\n``.

    Raises:
        UserError: the file is missing, unreadable or not UTF-8 (naming the line).
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise UserError(f"{path} line {line}: not UTF-8 text") from None
    return text.replace("\r\n", "\n")


def file_lines(path: str) -> list[str]:
    """The lines of a text file (split on ``\\n`` only), trailing blank lines dropped."""
    lines = read_text(path).split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def prepared_tokenizer(tokenizer: Tokenizer, max_length: int | None, strategy: str = "longest_first") -> Tokenizer:
    """A copy of ``tokenizer`` with no padding and the given truncation (the caller's stays as it is).

    Tokenizers saved by other tools (sentence-transformers, for one) often carry their own
    truncation and padding settings; encoding must never inherit them. A tokenizer that already
    has the wanted settings is returned as it is (copying costs ~30 ms for a 30k vocabulary), so
    a caller encoding many small batches can prepare it once.
    """
    if max_length is not None and max_length < 8:
        raise UserError(f"max_length must be at least 8, got {max_length}")
    wanted = None if max_length is None else {"max_length": max_length, "stride": 0, "strategy": strategy,
                                              "direction": "right"}
    if tokenizer.padding is None and tokenizer.truncation == wanted:
        return tokenizer
    tok = Tokenizer.from_str(tokenizer.to_str())
    tok.no_padding()
    if max_length is None:
        tok.no_truncation()
    else:
        tok.enable_truncation(max_length, strategy=strategy)
    return tok


@dataclass
class Features:
    """Encoded sequences, unpadded: the trainer batches by length and pads per batch.

    Attributes:
        input_ids: N arrays (T_i,) of token ids, specials included.
        token_type_ids: N arrays (T_i,) of segment ids.
        labels: (N,) int64 class ids or float32 targets, or N arrays (T_i,) of per-token label
            ids with ``IGNORE_INDEX`` where no loss applies; None for unlabelled input.
        lengths: (N,) the real length T_i of each sequence.
    """

    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray]
    labels: np.ndarray | list[np.ndarray] | None = None
    lengths: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.lengths = np.array([len(x) for x in self.input_ids], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.input_ids)

    def _per_sequence_fields(self) -> dict[str, np.ndarray]:
        """(N,) arrays that go into every batch (labels of sequence tasks, QA positions)."""
        return {"labels": self.labels} if isinstance(self.labels, np.ndarray) else {}

    def batch(self, indices: Sequence[int] | np.ndarray, pad_token_id: int = 0) -> dict[str, np.ndarray]:
        """Pads the chosen sequences to the longest of them.

        Args:
            indices: which sequences.
            pad_token_id: the tokenizer's padding id.

        Returns:
            ``input_ids``, ``token_type_ids``, ``attention_mask`` (B, T) int64, and ``labels``
            (B,) or (B, T) (padded with ``IGNORE_INDEX``) when labelled, plus any per-sequence
            fields of the family (QA: ``start_positions``, ``end_positions``).
        """
        indices = np.asarray(indices, dtype=np.int64)
        width = int(self.lengths[indices].max()) if len(indices) else 0
        out = {"input_ids": np.full((len(indices), width), pad_token_id, dtype=np.int64),
               "token_type_ids": np.zeros((len(indices), width), dtype=np.int64),
               "attention_mask": np.zeros((len(indices), width), dtype=np.int64)}
        token_labels = self.labels if isinstance(self.labels, list) else None
        if token_labels is not None:
            out["labels"] = np.full((len(indices), width), IGNORE_INDEX, dtype=np.int64)
        for row, i in enumerate(indices):
            n = self.lengths[i]
            out["input_ids"][row, :n] = self.input_ids[i]
            out["token_type_ids"][row, :n] = self.token_type_ids[i]
            out["attention_mask"][row, :n] = 1
            if token_labels is not None:
                out["labels"][row, :n] = token_labels[i]
        for name, values in self._per_sequence_fields().items():
            out[name] = values[indices]
        return out
