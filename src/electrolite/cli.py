"""The `electrolite` command: tokenizer, prepare, pretrain, flops, finetune, evaluate, predict, detect, fill-mask, export, demo.

A user's mistake prints one line, ``electrolite: error: ...``, and exits with status 2; a bug
of ours may traceback.

Each command imports what it runs inside its own function, so that ``electrolite --help`` and a bad
flag answer at once, without loading torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys

# Idle OpenMP workers spin by default; when anything else runs on the machine that turns into a
# several-fold slowdown (a tiny ELECTRA step: 2.96 s spinning vs 0.78 s sleeping, 2 shared cores).
# Must be set before torch loads its OpenMP runtime; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from typing import Any

from electrolite import config as cfgmod
from electrolite.config import PretrainConfig
from electrolite.errors import UserError

# Short flags the acceptance checks and README use, mapped to dotted config fields.
PRETRAIN_SHORTCUTS = {
    "corpus": ("corpus", str, "Corpus directory written by `electrolite prepare`."),
    "out": ("out", str, "Run directory; re-running the same command resumes it."),
    "size": ("size", str, "Named size: " + ", ".join(cfgmod.SIZES) + "."),
    "objective": ("objective.name", str, "electra or mlm."),
    "steps": ("train.steps", int, "Optimizer steps."),
    "batch-size": ("train.batch_size", int, "Sequences per micro-batch."),
    "seed": ("train.seed", int, "Random seed."),
    "save-every": ("train.save_every", int, "Checkpoint every K steps."),
    "budget": ("train.budget", str, "Wall-clock budget, e.g. 30m or 2h: stops cleanly with a checkpoint."),
    "precision": ("train.precision", str, "auto (bf16 where the CPU or GPU has native bf16, else fp32), fp32 "
                  "or bf16 (autocast)."),
    "lr": ("train.learning_rate", float, "Peak learning rate."),
    "masking": ("objective.masking", str, "token, whole_word or ngram."),
    "init": ("init", str, "Continue pre-training from this checkpoint: a Hugging Face BERT, ELECTRA or ALBERT dir, "
             "or an electrolite run or task dir (its architecture and tokenizer; prepare the corpus with "
             "--tokenizer PATH). Default lr 1e-4 and 6%% warm-up, Gururangan et al. 2020's TAPT values."),
    "init-generator": ("init_generator", str, "ELECTRA with --init: start the generator from this checkpoint "
                       "(e.g. an ElectraForMaskedLM dir); else a fresh one of objective.generator_size."),
}


def _add_config_fields(parser: argparse.ArgumentParser, cls: type) -> None:
    """One --section.field option per config field, documented by the field's docstring."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, tp, default, doc in cfgmod.iter_fields(cls):
        if "." not in name:
            continue
        section = name.split(".")[0]
        if section not in groups:
            groups[section] = parser.add_argument_group(f"{section} fields (any can also be set in --config YAML)")
        metavar = {bool: "BOOL", int: "INT", float: "FLOAT", str: "STR"}.get(tp, "VALUE")
        groups[section].add_argument(f"--{name}", dest=name, metavar=metavar, default=argparse.SUPPRESS,
                                     help=f"{doc} (default: {default!r})".replace("%", "%%"))


def _pretrain_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for flag, (key, _tp, _doc) in PRETRAIN_SHORTCUTS.items():
        value = getattr(args, flag.replace("-", "_"), None)
        if value is not None:
            overrides[key] = value
    if args.sop:
        overrides["objective.sop"] = True
    for key, value in vars(args).items():
        if "." in key:
            overrides[key] = value
    return overrides


def pretrain_config_from_args(args: argparse.Namespace) -> PretrainConfig:
    from electrolite.initialize import pretrain_config  # imports torch: kept out of --help's path

    file_data = cfgmod.load_yaml(args.config) if args.config else None
    return pretrain_config(file_data, _pretrain_overrides(args))


def cmd_tokenizer_train(args: argparse.Namespace) -> None:
    from electrolite.data.tokenizer import save_tokenizer, train_tokenizer
    tok = train_tokenizer(args.files, args.vocab_size, kind=args.kind, lowercase=not args.cased,
                          min_frequency=args.min_frequency, errors=args.encoding_errors)
    save_tokenizer(tok, args.out)
    print(f"wrote {args.out}/tokenizer.json ({args.kind}, {tok.get_vocab_size():,} tokens)")


def cmd_tokenizer_extend(args: argparse.Namespace) -> None:
    from electrolite.data.vocab import extend_tokenizer, write_extension
    tok, added = extend_tokenizer(args.tokenizer, args.corpus, args.add, args.min_count, args.encoding_errors)
    write_extension(tok, added, args.tokenizer, args.out)
    shown = ", ".join(f"{a['word']} ({len(a['pieces'])} pieces × {a['count']})" for a in added[:5])
    print(f"wrote {args.out}/tokenizer.json: {len(added)} words added after id {added[0]['id'] - 1}, e.g. {shown}")


def cmd_prepare(args: argparse.Namespace) -> None:
    from electrolite.data.corpus import prepare
    meta = prepare(args.files, args.tokenizer, args.seq_len, args.out, seed=args.seed,
                   valid_fraction=args.valid_fraction, pack_documents=args.pack_documents,
                   encoding_errors=args.encoding_errors, workers=args.workers,
                   progress=not args.no_progress, overwrite=args.overwrite)
    print(f"wrote {args.out}: {meta['num_train']:,} train and {meta['num_valid']:,} valid sequences "
          f"of {args.seq_len} tokens")


def cmd_pretrain(args: argparse.Namespace) -> None:
    from electrolite.pretrain import run
    summary = run(pretrain_config_from_args(args))
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return
    keys = [k for k in ("valid_loss", "valid_mlm_accuracy", "valid_rtd_accuracy", "valid_sop_accuracy") if k in summary]
    shown = ", ".join(f"{k} {summary[k]:.4f}" for k in keys)
    print(f"{summary['stop_reason']} at step {summary['step']}/{summary['steps']} in {summary['run']}"
          + (f": {shown}" if shown else ""))


def cmd_flops(args: argparse.Namespace) -> None:
    from electrolite import flops
    overrides = {"size": args.size, "objective.name": args.objective, "objective.sop": args.sop,
                 "model.vocab_size": args.vocab_size, "train.steps": args.steps, "train.batch_size": args.batch_size}
    if args.generator_size is not None:
        overrides["objective.generator_size"] = args.generator_size
    if args.objective == "electra" and args.recipe:
        overrides["objective.recipe"] = args.recipe
    for key, value in vars(args).items():
        if key.startswith("model."):
            overrides[key] = value
    cfg = cfgmod.resolve_pretrain_config(None, overrides)
    staged = flops.recipe_flops(cfg.model, cfg.generator_config(), cfg.objective, args.steps, args.batch_size,
                                args.seq_len)
    per_step = staged.paper(args.steps) / args.steps, staged.model(args.steps) / args.steps
    report = dataclasses.replace(staged.rest, steps=args.steps, paper_flops_per_step=per_step[0],
                                 paper_flops=staged.paper(args.steps), model_flops_per_step=per_step[1],
                                 model_flops=staged.model(args.steps))
    if args.json:
        print(json.dumps({**report.to_dict(), "first_stage_steps": staged.first_steps}, indent=1))
    else:
        recipe = f" ({cfg.objective.recipe} recipe)" if args.objective == "electra" else ""
        each = "mean per" if staged.first_steps else "per"
        print(f"{args.size} {args.objective}{'+sop' if args.sop else ''}{recipe}, {args.steps:,} steps × "
              f"{args.batch_size} × {args.seq_len}:")
        if staged.first_steps:
            print(f"  the first {staged.first_steps:,} steps are the masked-LM warm start of the discriminator "
                  f"({flops.format_flops(staged.first.paper_flops_per_step)} per step, paper convention)")
        print(f"  ELECTRA-paper convention: {flops.format_flops(report.paper_flops)} "
              f"({flops.format_flops(report.paper_flops_per_step)} {each} step)")
        print(f"  model FLOPs (fwd+bwd):    {flops.format_flops(report.model_flops)} "
              f"({flops.format_flops(report.model_flops_per_step)} {each} step)")


FINETUNE_SHORTCUTS = {
    "model": ("model", str), "task": ("task", str), "data": ("data", str), "out": ("out", str),
    "train": ("train_file", str), "dev": ("dev_file", str), "text-columns": ("text_columns", str),
    "label-column": ("label_column", str), "epochs": ("epochs", int), "seed": ("seed", int),
    "seeds": ("seeds", int), "batch-size": ("batch_size", int), "lr": ("learning_rate", float),
    "max-length": ("max_length", int), "precision": ("precision", str), "compile": ("compile", str),
    "max-train-examples": ("max_train_examples", int),
    "parallel": ("parallel", str), "recipe": ("recipe", str), "layerwise-lr-decay": ("layerwise_lr_decay", float),
    "adam-epsilon": ("adam_epsilon", float), "batch-order": ("batch_order", str), "head": ("head", str),
    "gradient-accumulation-steps": ("gradient_accumulation_steps", int),
}


def cmd_finetune(args: argparse.Namespace) -> None:
    from electrolite.config import FinetuneConfig
    from electrolite.finetune import run
    values: dict[str, Any] = {key: getattr(args, flag.replace("-", "_")) for flag, (key, _) in FINETUNE_SHORTCUTS.items()
                              if getattr(args, flag.replace("-", "_")) is not None}
    if args.regression:
        values["regression"] = True
    if args.from_scratch:
        values["from_scratch"] = True
    if args.no_progress:
        values["progress"] = False
    summary = run(cfgmod.build(FinetuneConfig, values))
    if not summary:  # under torchrun, rank 0 reports
        return
    if "median" in summary:
        spread = summary["spread"][summary["main_metric"]]
        print(f"{summary['task']}: {summary['main_metric']} median {summary['median']:.4f} over seeds "
              f"{summary['seeds']} (min {spread['min']:.4f}, max {spread['max']:.4f}); in {args.out}")
    else:
        print(f"{summary['task']}: {summary['main_metric']} {summary['main']:.4f} (best epoch "
              f"{summary['best_epoch']}/{summary['epochs']}); in {args.out}")
    if summary.get("note"):
        print(f"note: {summary['note']}")


def cmd_evaluate(args: argparse.Namespace) -> None:

    from electrolite.inference import evaluate
    from electrolite.training.checkpoint import write_json
    result = evaluate(args.model, args.data, args.dev, args.task)
    for split, metrics in result["results"].items():
        print(f"{result['task']} {split}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    if result["note"]:
        print(f"note: {result['note']}")
    out = pathlib.Path(args.out) if args.out else pathlib.Path(args.model) / "evaluate.json"
    write_json(result, out)
    print(f"wrote {out}")


def _open_lines(path: str):
    try:
        return open(path, encoding="utf-8")
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None


def cmd_predict(args: argparse.Namespace) -> None:
    from electrolite.inference import load_task, predict, read_inputs
    loaded = load_task(args.model, args.runtime)
    fields = tuple(loaded[1]["text_fields"])
    if args.texts:
        lines, source = args.texts, "argument"
    elif args.input and args.input != "-":
        lines, source = _open_lines(args.input), args.input
    else:
        lines, source = sys.stdin, "stdin"
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    from tqdm.auto import tqdm
    try:
        records = read_inputs(lines, fields, source)
        rows = predict(args.model, records, loaded=loaded, runtime=args.runtime)
        for row in tqdm(rows, disable=not args.output, desc="predict", unit="line"):
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    finally:
        if args.output:
            out.close()


def cmd_detect(args: argparse.Namespace) -> None:
    from electrolite.inference import detect
    result = detect(args.model, " ".join(args.text))
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return
    for t in result["tokens"]:
        bar = "#" * int(round(t["replaced_probability"] * 20))
        print(f"{t['token']:>16}  {t['replaced_probability']:.3f}  {bar}")


def cmd_fill_mask(args: argparse.Namespace) -> None:
    from electrolite.inference import fill_mask
    result = fill_mask(args.model, " ".join(args.text), args.top_k)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return
    for n, fills in enumerate(result["fills"], 1):
        print(f"{result['mask_token']} #{n}: " + ", ".join(f"{f['token']} ({f['probability']:.3f})" for f in fills))


def cmd_export(args: argparse.Namespace) -> None:
    if args.format == "onnx":
        from electrolite.interop.onnx import export_onnx as export
    else:
        from electrolite.interop.hf_export import export_hf as export
    for line in export(args.src, args.out):
        print(line)


def cmd_demo(args: argparse.Namespace) -> None:
    from electrolite.demo import run_demo
    run_demo(args.out, steps=args.steps)


def cmd_study(args: argparse.Namespace) -> None:
    from electrolite.studies.jobs import run_study
    from electrolite.studies.study import load_study
    results = run_study(load_study(args.config), pathlib.Path(args.out), jobs=args.jobs)
    done = sum(r["complete"] for r in results["setups"])
    print(f"wrote {args.out}/results.json and results.md ({done}/{len(results['setups'])} setups complete)")


def cmd_report(args: argparse.Namespace) -> None:
    from electrolite.studies.report import write_report
    path, pngs = write_report(args.dirs, args.out)
    print(f"wrote {path} ({len(pngs)} PNG plots)")


TASK_MODEL_HELP = ("fine-tuned task dir or Hugging Face {Electra,Bert,Albert}For{Sequence,Token}Classification "
                   "/ *ForQuestionAnswering dir")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="electrolite", description=(
        "Pre-train compact text encoders with ELECTRA, BERT's masked LM or ALBERT's recipe."))
    sub = parser.add_subparsers(dest="command", required=True)

    tok = sub.add_parser("tokenizer", help="train a tokenizer").add_subparsers(dest="action", required=True)
    p = tok.add_parser("train", help="train a WordPiece or Unigram tokenizer on text files")
    p.add_argument("files", nargs="+", help=".txt (blank line between documents), .txt.gz or .jsonl (text field)")
    p.add_argument("--vocab-size", type=int, required=True, help="vocabulary size")
    p.add_argument("--out", required=True, help="output directory (gets tokenizer.json)")
    p.add_argument("--kind", choices=["wordpiece", "unigram"], default="wordpiece",
                   help="wordpiece (BERT/ELECTRA) or unigram (SentencePiece, as ALBERT uses)")
    p.add_argument("--cased", action="store_true", help="keep case (default: lowercase)")
    p.add_argument("--min-frequency", type=int, default=2, help="minimum pair frequency (WordPiece)")
    p.add_argument("--encoding-errors", choices=["strict", "replace"], default="strict",
                   help="non-UTF-8 bytes: stop with an error (strict) or substitute U+FFFD (replace)")
    p.set_defaults(func=cmd_tokenizer_train)

    p = tok.add_parser("extend", help="add a domain's most split words to a WordPiece vocabulary (for pretrain "
                       "--init)")
    p.add_argument("tokenizer", help="tokenizer.json, vocab.txt or a directory with one (e.g. the checkpoint dir)")
    p.add_argument("--corpus", nargs="+", required=True, help="the domain's text: .txt, .txt.gz or .jsonl")
    p.add_argument("--add", type=int, required=True, help="how many words to add")
    p.add_argument("--min-count", type=int, default=5, help="a word must occur at least this often")
    p.add_argument("--out", required=True, help="output directory (tokenizer.json, vocab.txt, extension.json)")
    p.add_argument("--encoding-errors", choices=["strict", "replace"], default="strict",
                   help="non-UTF-8 bytes: stop with an error (strict) or substitute U+FFFD (replace)")
    p.set_defaults(func=cmd_tokenizer_extend)

    p = sub.add_parser("prepare", help="tokenize and pack text into a pre-training corpus directory")
    p.add_argument("files", nargs="+", help=".txt, .txt.gz or .jsonl files")
    p.add_argument("--tokenizer", required=True, help="tokenizer.json, vocab.txt or a directory with one")
    p.add_argument("--seq-len", type=int, required=True, help="tokens per packed sequence")
    p.add_argument("--out", required=True, help="corpus directory to create")
    p.add_argument("--seed", type=int, default=0, help="seed of the example builder and the validation split")
    p.add_argument("--valid-fraction", type=float, default=0.01, help="share of documents held out for validation")
    p.add_argument("--pack-documents", action="store_true",
                   help="let sequences run across document boundaries (fills short documents; RoBERTa style)")
    p.add_argument("--workers", type=int, default=None, help="tokenizer threads (default: all cores)")
    p.add_argument("--encoding-errors", choices=["strict", "replace"], default="strict",
                   help="non-UTF-8 bytes: stop with an error (strict) or substitute U+FFFD (replace)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing corpus directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("pretrain", help="pre-train an encoder (re-run to resume)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       epilog="Precedence: size table < --config YAML < flags. Sizes: " + ", ".join(cfgmod.SIZES))
    p.add_argument("--config", help="YAML file with size/corpus/out and model/objective/train sections")
    for flag, (_key, tp, doc) in PRETRAIN_SHORTCUTS.items():
        p.add_argument(f"--{flag}", type=tp, default=None, help=doc)
    p.add_argument("--sop", action="store_true", help="add ALBERT's sentence-order prediction")
    _add_config_fields(p, PretrainConfig)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("flops", help="training FLOPs in the ELECTRA paper's convention and as model FLOPs")
    p.add_argument("--size", required=True, help="named size")
    p.add_argument("--objective", choices=["electra", "mlm"], required=True)
    p.add_argument("--sop", action="store_true")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--seq-len", type=int, required=True)
    p.add_argument("--vocab-size", type=int, default=30522)
    p.add_argument("--generator-size", type=float, default=None, help="generator hidden as a fraction of the discriminator's")
    p.add_argument("--recipe", choices=sorted(cfgmod.RECIPES), default=None,
                   help=f"electra: the objective.recipe (default {cfgmod.DEFAULT_RECIPE}, as pretrain); its two-stage "
                   "warm start is counted at masked-LM cost")
    p.add_argument("--json", action="store_true", help="print JSON")
    for name, tp, default, doc in cfgmod.iter_fields(cfgmod.EncoderConfig, "model."):
        p.add_argument(f"--{name}", dest=name, default=argparse.SUPPRESS, help=doc.replace("%", "%%"))
    p.set_defaults(func=cmd_flops)

    p = sub.add_parser("finetune", help="fine-tune a pre-trained encoder on a task")
    p.add_argument("--model", required=True, help="pre-training run, task dir or Hugging Face checkpoint dir")
    p.add_argument("--task", required=True, help="cola sst2 mrpc stsb qqp mnli qnli rte wnli conll2003 squad1 squad2 "
                   "text-classification token-classification")
    p.add_argument("--data", help="the task's data folder (or file)")
    p.add_argument("--train", help="generic tasks: training file")
    p.add_argument("--dev", help="generic tasks: evaluation file")
    p.add_argument("--text-columns", help="text-classification: text column(s), A or A,B")
    p.add_argument("--label-column", help="text-classification: label column")
    p.add_argument("--regression", action="store_true", help="text-classification: numeric label")
    p.add_argument("--from-scratch", action="store_true",
                   help="same architecture and tokenizer, random weights: the no-pre-training baseline")
    p.add_argument("--out", required=True, help="task directory to create")
    p.add_argument("--epochs", type=int, help="epochs (default: the task's)")
    p.add_argument("--seed", type=int, help="seed (default 0)")
    p.add_argument("--seeds", type=int, help="fine-tune N times and report median and spread")
    p.add_argument("--batch-size", type=int, help="batch size (default 32)")
    p.add_argument("--gradient-accumulation-steps", type=int,
                   help="micro-batches of --batch-size per optimizer step (default 1)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: by width, as ELECTRA)")
    p.add_argument("--recipe", choices=["auto", "electra", "bert"],
                   help="auto (default): the checkpoint family's: electra for ELECTRA checkpoints and runs "
                   "(layer-wise LR decay 0.8), bert for BERT and ALBERT ones (no decay)")
    p.add_argument("--layerwise-lr-decay", type=float, help="LR factor per layer below the head (default: the recipe's)")
    p.add_argument("--adam-epsilon", type=float, help="AdamW epsilon (default: the recipe's)")
    p.add_argument("--batch-order", choices=["bucketed", "shuffled"],
                   help="bucketed: batches of similar length (little padding); shuffled: uniformly shuffled "
                   "(default: the recipe's)")
    p.add_argument("--head", choices=["auto", "electra", "pooler"],
                   help="classification head (default auto: electra for ELECTRA, BERT's pooler for BERT/ALBERT)")
    p.add_argument("--max-length", type=int, help="longest input in tokens (default: the task's)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                   help="bf16 autocast or fp32; auto (default): bf16 where the CPU or GPU has native bf16")
    p.add_argument("--compile", choices=["auto", "on", "off"],
                   help="torch.compile the encoder; auto (default): on for CUDA, off on CPU")
    p.add_argument("--max-train-examples", type=int, help="use only the first N training examples")
    p.add_argument("--parallel", choices=["ddp", "fsdp"], help="under torchrun: ddp (default) or fsdp (sharded model)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("evaluate", help="score a fine-tuned task dir on evaluation data")
    p.add_argument("--model", required=True, help=TASK_MODEL_HELP)
    p.add_argument("--data", help="data folder or evaluation file")
    p.add_argument("--dev", help="evaluation file")
    p.add_argument("--task", help="check that the model was fine-tuned for this task")
    p.add_argument("--out", help="where to write the results (default: MODEL/evaluate.json)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="predict with a fine-tuned task dir (JSON lines out)")
    p.add_argument("--model", required=True, help=TASK_MODEL_HELP)
    p.add_argument("texts", nargs="*", help="texts (or JSON objects with the task's fields)")
    p.add_argument("--input", help="file of texts or JSON lines (- for stdin)")
    p.add_argument("--output", help="write JSON lines here instead of stdout")
    p.add_argument("--runtime", choices=["torch", "onnx"], default="torch",
                   help="onnx: run a directory written by `export --format onnx` with onnxruntime")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("detect", help="per-token probability that a token was replaced (ELECTRA discriminator)")
    p.add_argument("--model", required=True, help="ELECTRA pre-training run or Hugging Face ElectraForPreTraining dir")
    p.add_argument("text", nargs="+")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("fill-mask", help="fill [MASK] tokens with the generator (or MLM head)")
    p.add_argument("--model", required=True, help="pre-training run or Hugging Face dir with a masked-LM head "
                   "(ElectraForMaskedLM, BertForMaskedLM, BertForPreTraining, AlbertFor{MaskedLM,PreTraining})")
    p.add_argument("text", nargs="+")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_fill_mask)

    p = sub.add_parser("export", help="export a run, task dir or Hugging Face dir as Hugging Face checkpoint(s), "
                       "or a classification/tagging task dir as ONNX",
                       description="--format hf: an ELECTRA run gives OUT/discriminator (ElectraForPreTraining) and "
                       "OUT/generator (ElectraForMaskedLM); an MLM run BertForMaskedLM (ALBERT classes when "
                       "factorized, shared or with SOP); a task dir {Electra,Bert,Albert}For{Sequence,Token}"
                       "Classification or *ForQuestionAnswering. Needs transformers (the hf extra). "
                       "--format onnx: a fine-tuned classification, regression or tagging task dir gives "
                       "OUT/model.onnx with its config.yaml and tokenizer.json, for `predict --runtime onnx`. "
                       "Needs the onnx extra.")
    p.add_argument("--format", choices=["hf", "onnx"], default="hf",
                   help="hf: Hugging Face transformers (default); onnx: ONNX graph for onnxruntime")
    p.add_argument("src", metavar="SRC", help="pre-training run, fine-tuned task dir or Hugging Face checkpoint dir "
                   "(onnx: a classification or tagging task dir)")
    p.add_argument("out", metavar="OUT", help="directory to create (an existing non-empty one is never overwritten)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="pre-train a tiny ELECTRA on the Python docs (about 3 minutes)")
    p.add_argument("--out", default="demo-run", help="directory for the corpus, tokenizer and run")
    p.add_argument("--steps", type=int, default=None, help="pre-training steps (default: fits ~2 minutes)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("study", help="pre-train setups to the same compute budget, fine-tune each on tasks",
                       description="CONFIG (YAML) names a corpus, a budget (paper-convention FLOPs such as 2e14, "
                       "or wall time such as 20m), pre-training setups and tasks; see configs/study-*.yaml. "
                       "Re-running the same command resumes where it stopped.")
    p.add_argument("config", help="study YAML")
    p.add_argument("--out", required=True, help="study directory (created; re-run to resume)")
    p.add_argument("--jobs", type=int, default=1,
                   help="pre-trainings / fine-tunes run at once, each in its own process with cores/JOBS threads "
                   "(default 1); small models do not fill a CPU's cores")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("report", help="plots and a markdown page from pre-training runs and studies",
                       description="Each DIR is a pre-training run (metrics.jsonl) or a study (results.json of "
                       "`electrolite study`). OUT gets report.md, report.json and PNGs: training curves per run, "
                       "all runs' validation curves, and for studies the downstream score against pre-training "
                       "FLOPs. Needs matplotlib (the report extra).")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="pre-training run dir or study dir")
    p.add_argument("--out", required=True, help="report directory to create (a previous report there is replaced)")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except UserError as e:
        if not (e.every_rank and int(os.environ.get("RANK", "0")) != 0):  # under torchrun, rank 0 says it once
            print(f"electrolite: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("electrolite: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
