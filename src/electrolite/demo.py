"""`electrolite demo`: tokenizer → prepare → pre-train a tiny ELECTRA on text every Python has.

The corpus is the English documentation inside Python's standard library (pydoc topics and
docstrings), so the demo needs no download. It ends by comparing the trained discriminator and
generator with the same model before training, on the held-out validation sequences.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from electrolite import config as cfgmod

DEMO_STEPS = 600
DEMO_OVERRIDES = {
    "size": "tiny",
    "objective.name": "electra",
    "train.batch_size": 32,
    "train.learning_rate": 2e-3,
    "train.warmup_steps": 60,
    "train.eval_every": 200,
    "train.eval_batches": 10,
    "train.save_every": 200,
    "train.log_every": 20,
    "train.seed": 0,
    "train.precision": "fp32",
}


def run_demo(out: str, steps: int | None = None) -> dict:
    """Run the demo into `out` (re-running reuses what is already there and resumes the run)."""
    from electrolite.corpus import prepare, write_builtin_corpus
    from electrolite.pretrain import run
    from electrolite.tokenizer import save_tokenizer, train_tokenizer

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    text = root / "python-docs.txt"
    if not text.exists():
        print("[1/4] writing the embedded corpus (Python's own documentation) ...")
        write_builtin_corpus(str(text))
    print(f"      {text} ({text.stat().st_size / 1e6:.1f} MB)")
    tok_dir = root / "tokenizer"
    if not (tok_dir / "tokenizer.json").exists():
        print("[2/4] training an 8k WordPiece tokenizer ...")
        save_tokenizer(train_tokenizer([str(text)], 8000, kind="wordpiece"), str(tok_dir))
    corpus = root / "corpus"
    if not (corpus / "meta.json").exists():
        print("[3/4] packing 128-token sequences ...")
        # Docstrings are short documents: pack across them, or most of each sequence is padding.
        prepare([str(text)], str(tok_dir / "tokenizer.json"), 128, str(corpus), seed=0, valid_fraction=0.02,
                pack_documents=True)
    overrides = dict(DEMO_OVERRIDES, corpus=str(corpus), out=str(root / "run"))
    overrides["train.steps"] = steps or DEMO_STEPS
    cfg = cfgmod.resolve_pretrain_config(None, overrides)
    print(f"[4/4] pre-training ELECTRA ({cfg.size}: hidden {cfg.model.hidden_size}, "
          f"{cfg.model.num_hidden_layers} layers; generator hidden {cfg.generator_config().hidden_size}) "
          f"for {cfg.train.steps} steps ...")
    summary = run(cfg)
    initial = _initial_eval(root / "run" / "metrics.jsonl")
    print()
    print(f"Done in {time.perf_counter() - started:.0f} s. The run is in {root / 'run'} "
          f"(config.yaml, model.safetensors, metrics.jsonl, checkpoints/).")
    print("Validation, trained vs the same model before training:")
    rows = [("generator masked-LM accuracy", "valid_mlm_accuracy"),
            ("discriminator loss", "valid_rtd_loss"),
            ("replaced-token detection AUC", "valid_rtd_auc"),
            ("replaced-token detection accuracy", "valid_rtd_accuracy"),
            ("  on replaced tokens", "valid_rtd_replaced_accuracy")]
    for label, key in rows:
        if key in summary:
            print(f"  {label:<36} {summary[key]:.3f}   (untrained {initial.get(key, float('nan')):.3f})")
    if "valid_replaced_fraction" in summary:
        q = summary["valid_replaced_fraction"]
        prior = -(q * math.log(q) + (1 - q) * math.log(1 - q))
        print(f"  {'RTD accuracy of all-original':<36} {1 - q:.3f}   (loss of that prior {prior:.3f}; AUC 0.5 is chance)")
        print("A tiny model this short learns the generator's masked LM first; detection of replaced tokens\n"
              "rises later (see metrics.jsonl, or pre-train longer with --steps).")
    return summary


def _initial_eval(metrics_path: Path) -> dict:
    """The step-0 validation line of a run (the untrained model)."""
    for line in metrics_path.read_text().splitlines():
        record = json.loads(line)
        if record.get("step") == 0:
            return record
    return {}
