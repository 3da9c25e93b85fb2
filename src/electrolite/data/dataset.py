"""Reading a prepared corpus: ``PretrainingCorpus`` memory-maps one split's safetensors shards
and gives batches; ``EpochSampler`` hands each rank disjoint, resumable batches of indices.

(Split from corpus.py, which writes corpora, so each stays under ~500 lines.)
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import torch

from electrolite.data.tokenizer import SpecialTokens
from electrolite.errors import UserError

FORMAT = "electrolite-corpus"
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------------
# Reading a prepared corpus
# ---------------------------------------------------------------------------------------------

_SAFETENSORS_DTYPES = {"U8": np.uint8, "U16": np.uint16, "I16": np.int16, "I32": np.int32, "I64": np.int64}


def _mmap_safetensors(path: str) -> dict[str, np.ndarray]:
    """Memory-maps each tensor of a safetensors file: nothing is read until it is indexed.

    Layout: 8-byte little-endian header size N, N bytes of JSON header, then the raw data;
    ``data_offsets`` in the header are relative to the start of the data.
    """
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        tensors: dict[str, np.ndarray] = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]]).newbyteorder("<")
            shape = tuple(info["shape"])
            if end - begin != dtype.itemsize * int(np.prod(shape)):
                raise ValueError(f"tensor {name} has {end - begin} bytes for shape {shape}")
            tensors[name] = np.memmap(path, dtype=dtype, mode="r", offset=8 + n + begin, shape=shape)
        return tensors
    except (OSError, ValueError, KeyError, TypeError, struct.error) as e:
        raise UserError(f"{path}: not a readable corpus shard ({e})") from None


class PretrainingCorpus:
    """One split of a prepared corpus, memory-mapped.

    Args:
        corpus_dir: a directory written by ``prepare``.
        split: ``"train"`` or ``"valid"`` (a split may hold no examples: ``len() == 0``).
    """

    def __init__(self, corpus_dir: str, split: str = "train"):
        corpus_dir = self.dir = os.fspath(corpus_dir)
        path = os.path.join(corpus_dir, "meta.json")
        if not os.path.isfile(path):
            raise UserError(f"{corpus_dir} is not a prepared corpus (no meta.json)")
        try:
            with open(path, encoding="utf-8") as f:
                self.meta = json.load(f)
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: unreadable ({e})") from None
        if not isinstance(self.meta, dict) or self.meta.get("format") != FORMAT:
            raise UserError(f"{path}: not an electrolite corpus")
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise UserError(f"{path}: corpus format version {self.meta.get('format_version')}, this electrolite "
                            f"reads version {FORMAT_VERSION}; prepare the corpus again")
        try:
            splits = self.meta["splits"]
            if split not in splits:
                raise UserError(f"{corpus_dir}: no split {split!r} (has {', '.join(splits)})")
            self.split = split
            self.seq_len: int = self.meta["seq_len"]
            self.vocab_size: int = self.meta["vocab_size"]
            self.special = SpecialTokens(**self.meta["special_tokens"])
            shards = [(os.path.join(corpus_dir, s["file"]), s["examples"]) for s in splits[split]["shards"]]
        except (KeyError, TypeError) as e:
            raise UserError(f"{path}: malformed ({e!r} missing or wrong)") from None
        self._ids: list[np.ndarray] = []  # per shard (n, seq_len), memory-mapped
        self._segs: list[np.ndarray] = []  # per shard (n, 2)
        counts = []
        for file, n in shards:
            tensors = _mmap_safetensors(file)
            ids, segs = tensors.get("input_ids"), tensors.get("segment_lengths")
            if ids is None or segs is None or ids.shape != (n, self.seq_len) or segs.shape != (n, 2):
                raise UserError(f"{file}: expected input_ids ({n}, {self.seq_len}) and segment_lengths ({n}, 2)")
            self._ids.append(ids)
            self._segs.append(segs)
            counts.append(n)
        self._starts = np.cumsum([0, *counts])  # (shards + 1,) first global index of each shard

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def tokenizer_path(self) -> str:
        """The tokenizer.json the corpus was prepared with."""
        return os.path.join(self.dir, "tokenizer.json")

    def check_tokenizer(self, fingerprint: str) -> None:
        """Raises ``UserError`` unless ``fingerprint`` (``tokenizer_fingerprint(tok)``) is the corpus's."""
        if fingerprint != self.meta["tokenizer_fingerprint"]:
            raise UserError(f"corpus {self.dir} was prepared with a different tokenizer than this run's")

    def batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        """Gathers examples by global index.

        Args:
            indices: (B,) example indices in ``[0, len(self))``, in any order.

        Returns:
            ``input_ids`` (B, L) int64, ``token_type_ids`` (B, L) int64 (1 on segment B and its
            [SEP]), ``attention_mask`` (B, L) bool, ``segment_lengths`` (B, 2) int64 (A, B without specials).
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"example index out of range [0, {len(self)})")
        shard = np.searchsorted(self._starts, idx, side="right") - 1  # (B,)
        ids = np.empty((idx.size, self.seq_len), dtype=np.int64)
        segs = np.empty((idx.size, 2), dtype=np.int64)
        for s in np.unique(shard):
            rows = np.nonzero(shard == s)[0]
            local = idx[rows] - self._starts[s]
            ids[rows] = self._ids[s][local]
            segs[rows] = self._segs[s][local]
        pos = np.arange(self.seq_len)[None, :]  # (1, L)
        len_a, len_b = segs[:, :1], segs[:, 1:]  # (B, 1) each
        length = len_a + 2 + np.where(len_b > 0, len_b + 1, 0)  # [CLS] A [SEP] (B [SEP])
        return {
            "input_ids": torch.from_numpy(ids),
            "token_type_ids": torch.from_numpy(((pos >= len_a + 2) & (pos < length)).astype(np.int64)),
            "attention_mask": torch.from_numpy(pos < length),
            "segment_lengths": torch.from_numpy(segs),
        }


class EpochSampler:
    """Endless, resumable batches of example indices; ranks get disjoint slices of each epoch.

    Epoch ``e`` is a permutation seeded by ``(seed, e)``. With ``drop_last`` each rank takes a
    contiguous ``num_examples // world_size`` slice of it and the leftover examples (fewer than
    ``world_size``, plus each rank's last partial batch) wait for the next epoch's shuffle.
    Without ``drop_last`` the permutation is padded by wrapping around (as torch's
    ``DistributedSampler`` does) so every rank has the same number of batches, the last one short.

    Args:
        num_examples: size of the dataset.
        batch_size: examples per batch on this rank.
        seed: the shuffling seed.
        rank: this process's rank.
        world_size: the number of processes.
        drop_last: drop partial batches (see above).
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 drop_last: bool = True):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of size {world_size}")
        if batch_size < 1:
            raise UserError(f"batch_size must be positive, got {batch_size}")
        self.num_examples, self.batch_size, self.seed = num_examples, batch_size, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        if drop_last:
            self.per_rank = num_examples // world_size
            self.batches_per_epoch = self.per_rank // batch_size
        else:
            self.per_rank = -(-num_examples // world_size)
            self.batches_per_epoch = -(-self.per_rank // batch_size)
        if self.batches_per_epoch == 0:
            raise UserError(f"{num_examples} examples are too few for batches of {batch_size} "
                            f"on {world_size} process(es)")
        self.epoch = self.position = 0  # position: batches already taken from this epoch
        self._cached: tuple[int, np.ndarray] | None = None

    def _rank_indices(self, epoch: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != epoch:
            rng = np.random.default_rng([self.seed % 2**63, epoch])
            perm = rng.permutation(self.num_examples)
            if not self.drop_last:
                perm = np.resize(perm, self.per_rank * self.world_size)  # wraps around
            self._cached = (epoch, perm[self.rank * self.per_rank : (self.rank + 1) * self.per_rank])
        return self._cached[1]

    def next_batch(self) -> np.ndarray:
        """The next (batch_size,) int64 indices (shorter only for the last batch without drop_last)."""
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        start = self.position * self.batch_size
        self.position += 1
        return self._rank_indices(self.epoch)[start : start + self.batch_size]

    def state_dict(self) -> dict:
        """Epoch and position (enough to continue with exactly the same batches), and the layout."""
        return {"epoch": self.epoch, "position": self.position, "world_size": self.world_size,
                "batch_size": self.batch_size, "batches_per_epoch": self.batches_per_epoch}

    def load_state_dict(self, state: dict) -> None:
        """Restores ``state_dict()``. Written with another number of ranks or batch size, the epoch
        continues from the same fraction of its batches (the rest of that epoch's examples may then
        differ from an uninterrupted run's; later epochs do not)."""
        epoch, position = int(state["epoch"]), int(state["position"])
        if (int(state.get("world_size", self.world_size)), int(state.get("batch_size", self.batch_size))) != \
                (self.world_size, self.batch_size) and state.get("batches_per_epoch"):
            position = min(self.batches_per_epoch, position * self.batches_per_epoch // int(state["batches_per_epoch"]))
        if epoch < 0 or not 0 <= position <= self.batches_per_epoch:
            raise UserError(f"sampler state {state} does not fit {self.batches_per_epoch} batches per epoch")
        self.epoch, self.position = epoch, position
