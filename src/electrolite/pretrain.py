"""Pre-training recipe: setup → loop → evaluate → checkpoint → cleanup.

Launch::

    electrolite pretrain --corpus CORPUS --out RUN --size electra-small --objective electra --steps 10000

Re-running the same command resumes from RUN/checkpoints/latest. Any objective (electra, mlm,
+sop) runs on any encoder (plain, factorized, shared); the run directory holds config.yaml,
tokenizer.json, model.safetensors, metrics.jsonl and checkpoints/.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterable, cast

import torch
from tqdm import tqdm

from electrolite import config as cfgmod
from electrolite import flops
from electrolite.config import PretrainConfig
from electrolite.data.dataset import EpochSampler, PretrainingCorpus
from electrolite.data.tokenizer import load_tokenizer, special_tokens, tokenizer_fingerprint, word_start_mask
from electrolite.data.vocab import added_pieces
from electrolite.errors import UserError
from electrolite.initialize import InitSource, apply_init, grow_vocabulary, read_init
from electrolite.model import Encoder
from electrolite.objectives import Electra, Masker, build_objective, make_inputs, prior_rtd_loss
from electrolite.training import checkpoint, sharding
from electrolite.training.loop import MetricsLog, StepResult, StopFlag, TrainState, train_step
from electrolite.training.optim import adamw, lr_multiplier, param_groups, set_lr
from electrolite.training.runtime import (
    Dist,
    any_rank,
    autocast,
    broadcast,
    gather,
    init_distributed,
    maybe_compile,
    mean_over_ranks,
    resolve_device,
    resolve_precision,
    shutdown,
    to_device,
    wrap_data_parallel,
)

# Train fields a resumed run may change; every other field must match the saved config.yaml.
RESUMABLE_CHANGES = {"train.steps", "train.budget", "train.save_every", "train.keep_last", "train.eval_every",
                     "train.eval_batches", "train.log_every", "train.tensorboard", "train.progress", "train.device",
                     "train.precision", "train.compile", "train.max_nonfinite_steps", "train.parallel"}
EVAL_SEED = 12345
RANK_SEED_STRIDE = 1_000_003  # rank r's masking / dropout seeds: seed + r × stride (rank 0: the single-process seeds)


class RunSetup:
    """Everything a pre-training run needs, built from its config and corpus."""

    def __init__(self, cfg: PretrainConfig, world_size: int = 1):
        if not cfg.corpus:
            raise UserError("pretrain needs --corpus DIR (a directory written by `electrolite prepare`)")
        self.corpus = PretrainingCorpus(cfg.corpus, "train")
        self.valid = PretrainingCorpus(cfg.corpus, "valid") if self.corpus.meta.get("num_valid", 0) else None
        tok_path = Path(cfg.corpus) / "tokenizer.json"
        self.tokenizer = load_tokenizer(str(tok_path))
        self.special = special_tokens(self.tokenizer)
        seq_len = self.corpus.seq_len
        vocab = self.tokenizer.get_vocab_size()
        self.added_pieces: dict[int, list[int]] = {}  # init with an extended vocabulary: new id → base pieces
        if cfg.init and vocab > cfg.model.vocab_size:
            self.added_pieces = added_pieces(load_tokenizer(cfg.init), self.tokenizer) or {}
            if not self.added_pieces:
                raise UserError(f"corpus {cfg.corpus}'s tokenizer has {vocab} tokens, more than --init {cfg.init}'s "
                                f"{cfg.model.vocab_size}, and is not its extension (`electrolite tokenizer extend`); "
                                f"prepare the corpus with --tokenizer {cfg.init}")
        model = dataclasses.replace(cfg.model, vocab_size=vocab if self.added_pieces or not cfg.init
                                    else cfg.model.vocab_size, pad_token_id=self.special.pad_token_id)
        if seq_len > model.max_position_embeddings:
            raise UserError(f"corpus sequence length {seq_len} exceeds model.max_position_embeddings "
                            f"{model.max_position_embeddings}")
        self.cfg = dataclasses.replace(cfg, model=model)
        self.seq_len = seq_len
        self.generator_cfg = self.cfg.generator_config()
        self.masker = Masker(self.cfg.objective, model.vocab_size, self.special.mask_token_id,
                             [self.special.cls_token_id, self.special.sep_token_id, self.special.pad_token_id,
                              self.special.mask_token_id], word_start_mask(self.tokenizer))
        t, o = self.cfg.train, self.cfg.objective
        batch = t.batch_size * t.gradient_accumulation_steps * world_size
        # ELECTRA's two-stage warm start: its first steps cost what a masked-LM step on the discriminator does
        if o.name == "electra" and o.embedding_sharing == "gdes" and t.parallel == "fsdp":
            raise UserError("objective.embedding_sharing gdes (the small-budget recipe's) is not supported with "
                            "train.parallel fsdp: use ddp, or --objective.embedding_sharing shared")
        self.flops = flops.recipe_flops(model, self.generator_cfg, o, t.steps, batch, seq_len)

    def paper_flops(self, step: int) -> float:
        """Paper-convention FLOPs of the first `step` steps (both stages of a two-stage warm start)."""
        return self.flops.paper(step)

    def model_flops(self, step: int) -> float:
        """Matmul FLOPs of the first `step` steps."""
        return self.flops.model(step)

    def read_init(self) -> tuple[InitSource, InitSource | None]:
        """The weights `init` (and `init_generator`) name, checked against the corpus's tokenizer."""
        sources = [read_init(self.cfg.init)] + ([read_init(self.cfg.init_generator)] if self.cfg.init_generator else [])
        mine = tokenizer_fingerprint(self.tokenizer)
        for flag, source in zip(("--init", "--init-generator"), sources):
            if tokenizer_fingerprint(source.tokenizer) == mine:
                continue
            pieces = added_pieces(source.tokenizer, self.tokenizer)
            if pieces is None:
                raise UserError(f"corpus {self.cfg.corpus} was prepared with another tokenizer than {flag} "
                                f"{source.path}'s; prepare it with --tokenizer {source.path}")
            grow_vocabulary(source, pieces, self.cfg.model.vocab_size)  # new rows: the mean of their pieces'
        return sources[0], (sources[1] if len(sources) > 1 else None)

    def build_model(self) -> torch.nn.Module:
        torch.manual_seed(self.cfg.train.seed)
        model = build_objective(self.cfg.model, self.cfg.objective, self.generator_cfg)
        if hasattr(model, "set_random_pool"):  # uniform replacements draw from the masker's non-special ids
            cast(Electra, model).set_random_pool(self.masker.random_pool)  # only Electra has it
        return model


def config_differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    out = []
    for key in sorted(set(saved) | set(current)):
        name = f"{prefix}{key}"
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, name + ".")
        elif a != b:
            out.append(name)
    return out


def prepare_run_dir(setup: RunSetup) -> bool:
    """Create RUN (config.yaml, tokenizer.json) or check that it can be resumed. Returns True when resuming."""
    out = Path(setup.cfg.out)
    if not setup.cfg.out:
        raise UserError("pretrain needs --out RUN")
    current = cfgmod.to_dict(setup.cfg)
    saved_path = out / "config.yaml"
    if saved_path.exists():
        # Through the dataclass: a field added since the run was written compares at the value it reads as.
        try:
            saved = cfgmod.to_dict(cfgmod.build(PretrainConfig, cfgmod.load_yaml(saved_path)))
        except UserError as e:
            raise UserError(f"{saved_path}: {e}") from None
        diffs = [d for d in config_differences(saved, current) if d not in RESUMABLE_CHANGES | {"corpus", "out"}]
        if diffs:
            raise UserError(f"{out} holds a run with another config ({', '.join(diffs)} differ); "
                            f"use a new --out or the same settings to resume")
        run_tok = load_tokenizer(str(out / "tokenizer.json"))
        if tokenizer_fingerprint(run_tok) != tokenizer_fingerprint(setup.tokenizer):
            raise UserError(f"corpus {setup.cfg.corpus} was prepared with a different tokenizer than run {out}'s")
        return True  # run() records changed steps/budget in config.yaml once the checkpoint has loaded
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not an electrolite run (no config.yaml); choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(setup.cfg.corpus) / "tokenizer.json", out / ".tokenizer.json.tmp")
    (out / ".tokenizer.json.tmp").replace(out / "tokenizer.json")
    cfgmod.save_yaml(current, saved_path)  # written last: its presence marks a run dir
    return False


@torch.no_grad()
def validation_metrics(model: torch.nn.Module, setup: RunSetup, device: torch.device, batches: int,
             precision: str) -> dict[str, float]:
    """Validation metrics on the first `batches` validation batches with fixed, seeded masks and samples.

    `precision` is resolved: fp32 or bf16 (``distributed.resolve_precision``).
    """
    if setup.valid is None:
        return {}
    was_training = model.training
    model.eval()
    if hasattr(model, "set_final"):  # ELECTRA: measured against the corruption its recipe ends at
        cast(Electra, model).set_final()
    gen = torch.Generator().manual_seed(EVAL_SEED)
    b = setup.cfg.train.batch_size
    totals: dict[str, float] = {}
    n = 0
    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(EVAL_SEED)
        for start in range(0, min(len(setup.valid), batches * b), b):
            idx = torch.arange(start, min(start + b, len(setup.valid))).numpy()
            inputs = make_inputs(setup.valid.batch(idx), setup.masker, setup.cfg.objective.sop, gen)
            with autocast(device, precision):
                out = model(to_device(inputs, device))
            for k, v in out.metrics().items():
                totals[k] = totals.get(k, 0.0) + v
            n += 1
    model.train(was_training)
    return {f"valid_{k}": v / n for k, v in totals.items()}


PLATEAU_EVALS = 3  # evaluations in a row at the prior before the run says so
PLATEAU_TOLERANCE = 0.01  # "at the prior": validation RTD loss within 1% of the all-original prior's
PLATEAU_LEVERS = ("objective.recipe small-budget with train.learning_rate 3e-4 (all of the following)",
                  "objective.two_stage_fraction", "objective.embedding_sharing gdes with a small generator_lr_scale",
                  "objective.uniform_replace_start and temperature_start with curriculum_fraction")


def plateau(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The RTD plateau, if the last PLATEAU_EVALS validations (after step 0) all sat at the all-original prior.

    A discriminator there answers "original" everywhere and learns nothing about context (STUDY.md), so the
    run should say so and name the levers that move it. Returns {steps, prior, loss, auc, message} or None.
    """
    last = [r for r in records if r["step"] > 0 and "valid_rtd_loss" in r][-PLATEAU_EVALS:]
    if len(last) < PLATEAU_EVALS:
        return None
    priors = [prior_rtd_loss(r["valid_replaced_fraction"]) for r in last]
    if any(abs(r["valid_rtd_loss"] - q) > PLATEAU_TOLERANCE * q for r, q in zip(last, priors)):
        return None
    r, q = last[-1], priors[-1]
    message = (f"the discriminator has stayed at the all-original prior for {PLATEAU_EVALS} evaluations "
               f"(steps {last[0]['step']}-{r['step']}: validation RTD loss {r['valid_rtd_loss']:.4f}, prior {q:.4f}, "
               f"AUC {r.get('valid_rtd_auc', float('nan')):.3f}); it is not learning to detect replacements. "
               f"Levers: {'; '.join(PLATEAU_LEVERS)} (README: when ELECTRA does not learn)")
    return {"steps": [x["step"] for x in last], "prior": round(q, 6), "loss": r["valid_rtd_loss"],
            "auc": r.get("valid_rtd_auc"), "message": message}


def objective_forward(model: torch.nn.Module, device: torch.device, inputs: dict[str, torch.Tensor]
                      ) -> tuple[torch.Tensor, dict[str, float]]:
    """The objective on one micro-batch of ``make_inputs``: a ``training.loop.Compute``."""
    out = model(to_device(inputs, device))
    return out.loss, out.metrics()


def objective_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, micro_batches: Iterable[dict[str, torch.Tensor]],
                   accumulation: int, device: torch.device, precision: str, max_grad_norm: float, dist: Dist = Dist(),
                   objective: torch.nn.Module | None = None) -> StepResult:
    """One optimizer step of the objective over `accumulation` micro-batches (``training.loop.train_step``).

    `model` is what runs (the DDP wrapper, if any); `objective`, the unwrapped module, takes part where it
    asks to: ELECTRA's decoupled clipping (generator and discriminator each clipped as its own model) and
    GDES's hooks around the optimizer step.
    """
    clip_groups = None
    if objective is not None and getattr(objective.objective, "decoupled_training", False):
        gen = cast(Electra, objective).generator_parameters()  # decoupled_training is ELECTRA's
        gen_ids = {id(p) for p in gen}
        clip_groups = [gen, [p for p in {id(p): p for p in model.parameters()}.values() if id(p) not in gen_ids]]
    hooks = cast(Electra, objective) if objective is not None and hasattr(objective, "after_optimizer_step") else None
    return train_step(model, optimizer, micro_batches, functools.partial(objective_forward, model, device),
                      accumulation, device, precision, max_grad_norm, dist, clip_groups, hooks)


def on_main(dist: Dist, fn):
    """fn() on rank 0 only; its result (or its UserError, raised on every rank) reaches all ranks."""
    result, error = None, None
    if dist.is_main:
        try:
            result = fn()
        except UserError as e:
            error = str(e)
    result, error = broadcast(dist, (result, error))
    if error is not None:
        raise UserError(error, every_rank=True)
    return result


def rng_states(dist: Dist, device: torch.device, mask_gen: torch.Generator) -> dict[str, torch.Tensor]:
    """This step's RNG states of every rank (a collective): rank 0's under the single-process names,
    the others' as ``<name>_rank<r>``."""
    mine = {"torch_cpu": torch.get_rng_state(), "masking": mask_gen.get_state()}
    if device.type == "cuda":
        mine["torch_cuda"] = torch.cuda.get_rng_state(device)
    out = {}
    for r, states in enumerate(gather(dist, mine)):
        out.update({(k if r == 0 else f"{k}_rank{r}"): v for k, v in states.items()})
    return out


def restore_rng(rng: dict[str, torch.Tensor], state: dict[str, Any], dist: Dist, device: torch.device,
                mask_gen: torch.Generator, reseed: int) -> None:
    """Each rank continues its own random streams; on another number of ranks than wrote the checkpoint,
    ranks without a saved stream start fresh ones (seeded by step and rank): the data order still
    continues exactly, masks and dropout differ from an uninterrupted run."""
    suffix = "" if dist.rank == 0 else f"_rank{dist.rank}"
    if state.get("world_size", 1) == dist.world_size and f"torch_cpu{suffix}" in rng:
        torch.set_rng_state(rng[f"torch_cpu{suffix}"])
        mask_gen.set_state(rng[f"masking{suffix}"])
        if device.type == "cuda" and f"torch_cuda{suffix}" in rng:
            torch.cuda.set_rng_state(rng[f"torch_cuda{suffix}"], device)
    else:
        torch.manual_seed(reseed + RANK_SEED_STRIDE * dist.rank)
        mask_gen.manual_seed(reseed + 1 + RANK_SEED_STRIDE * dist.rank)


def run(cfg: PretrainConfig) -> dict[str, Any]:
    """Pre-train (or resume) a run; returns its final summary."""
    # --- setup ---------------------------------------------------------------------------------
    dist = init_distributed(cfg.train.device)
    setup = RunSetup(cfg, dist.world_size)
    cfg = setup.cfg
    t = cfg.train
    run_dir = Path(cfg.out)
    fresh = not (run_dir / "config.yaml").exists() or checkpoint.latest_checkpoint(run_dir) is None
    init = setup.read_init() if cfg.init and fresh else None  # before the run dir: a mismatch leaves nothing
    resuming = on_main(dist, lambda: prepare_run_dir(setup))
    device = resolve_device(t.device, dist)
    precision = resolve_precision(t.precision, device)  # config.yaml keeps "auto": a resume decides again
    model = setup.build_model()  # the same initial weights on every rank (seeded)
    if init is not None:
        apply_init(model, *init)
        if dist.is_main:
            checkpoint.write_json(init[0].record(), run_dir / "init.json")
    model = model.to(device)
    model.train()
    compiled = maybe_compile([m for m in model.modules() if isinstance(m, Encoder)], t.compile, device)
    # DDP broadcasts rank 0's weights; FSDP shards `model` in place, so the optimizer comes after.
    trained = wrap_data_parallel(model, dist, device, t.parallel, getattr(model, "changes_stage", False))
    scales = cast(Electra, model).lr_scales() if hasattr(model, "lr_scales") else None  # ELECTRA: the generator's lr
    undecayed = cast(Electra, model).no_weight_decay() if hasattr(model, "no_weight_decay") else None
    optimizer = adamw(param_groups(model, t.weight_decay, t.learning_rate, scales, undecayed), t.learning_rate,
                      (t.adam_beta1, t.adam_beta2), t.adam_epsilon, device)
    # Masks, samples and dropout differ per rank; rank 0 draws what a single process would.
    mask_gen = torch.Generator().manual_seed(t.seed + 1 + RANK_SEED_STRIDE * dist.rank)
    if dist.rank:
        torch.manual_seed(t.seed + RANK_SEED_STRIDE * dist.rank)
    sampler = EpochSampler(len(setup.corpus), t.batch_size, t.seed, dist.rank, dist.world_size)
    train = TrainState()
    latest = checkpoint.latest_checkpoint(run_dir) if resuming else None
    if latest is not None:  # every rank reads the checkpoint (a file system all nodes share)
        state, rng = sharding.restore(latest, model, optimizer)
        train.step, train.elapsed = state["step"], state["elapsed_seconds"]
        sampler.load_state_dict(state["sampler"])
        restore_rng(rng, state, dist, device, mask_gen, t.seed + train.step)
    if resuming and dist.is_main:  # only now: a resume that fails leaves config.yaml as it was
        cfgmod.save_yaml(cfgmod.to_dict(cfg), run_dir / "config.yaml")
    budget = cfgmod.parse_duration(t.budget) if t.budget else math.inf
    warmup = t.resolved_warmup_steps
    global_batch = t.batch_size * t.gradient_accumulation_steps * dist.world_size
    started_from = (json.loads((run_dir / "init.json").read_text())
                    if cfg.init and dist.is_main and (run_dir / "init.json").exists() else None)
    log = MetricsLog(run_dir, train.step, t.tensorboard, {"precision": precision, "compiled": compiled,
                                                   "world_size": dist.world_size, "global_batch": global_batch,
                                                   **({"init": started_from} if started_from else {})}
                     ) if dist.is_main else None
    tokens_per_step = global_batch * setup.seq_len

    train.last_checkpoint = latest.name if latest is not None else None
    diverged = False  # K non-finite steps in a row stop the run

    def save(reason: str) -> None:
        step = train.step
        rng = rng_states(dist, device, mask_gen)  # a collective: every rank saves at the same steps
        # FSDP: the shards gathered to rank 0 (collectives too); else the model and optimizer themselves
        weights, moments = sharding.gather_weights(model), sharding.gather_optimizer(model, optimizer)
        state = {"sampler": sampler.state_dict(), "elapsed_seconds": train.elapsed, "reason": reason,
                 "world_size": dist.world_size, "global_batch": global_batch,
                 "paper_flops": setup.paper_flops(step),
                 "model_flops": setup.model_flops(step)}

        def write() -> None:
            ck = checkpoint.save_checkpoint(run_dir, step, weights, moments, rng, state, t.keep_last)
            checkpoint.publish_weights(ck, run_dir / "model.safetensors")

        on_main(dist, write)  # a failed write (disk full ...) is a UserError on every rank; `latest` stays
        train.last_checkpoint = f"step-{step:08d}"

    sharded = sharding.is_sharded(model)

    def log_eval() -> dict[str, float]:
        step = train.step
        if not (dist.is_main or sharded):
            return {}
        metrics = validation_metrics(model, setup, device, t.eval_batches, precision)  # FSDP: every rank's forward gathers
        if not dist.is_main:
            return {}
        assert log is not None  # rank 0 keeps the log
        if metrics and step not in log.valid_steps:  # a resumed run may already have logged this step
            log.valid_steps.add(step)
            record = {"step": step, **{k: round(v, 6) for k, v in metrics.items()}, "paper_flops": setup.paper_flops(step)}
            if "valid_rtd_loss" in record:
                log.valid_records.append(record)
                stuck = plateau(log.valid_records)
                if stuck is not None:
                    record["rtd_plateau"] = True
                    print(f"electrolite: warning: step {step}: {stuck['message']}", file=sys.stderr)
            log.write(record)
        return metrics

    initial = log_eval() if train.step == 0 else {}  # the untrained model: what training must beat
    bar = tqdm(total=t.steps, initial=train.step, disable=not (t.progress and dist.is_main), unit="step", dynamic_ncols=True,
               desc=f"{cfg.objective.name}{'+sop' if cfg.objective.sop else ''} {cfg.size} {precision}")
    stop_reason = "completed"
    window_time, window_steps = 0.0, 0
    if latest is not None and dist.is_main:  # says where a resumed run went on from
        print(f"electrolite: resuming from {latest.name} (step {train.step}/{t.steps})", file=sys.stderr)
    # --- loop ----------------------------------------------------------------------------------
    with StopFlag() as stop:
        while train.step < t.steps:
            over_budget, signalled = any_rank(dist, train.elapsed >= budget, stop.signal is not None)  # agreed
            if over_budget:
                stop_reason = f"budget {t.budget} reached"
                break
            if signalled:
                stop_reason = f"stopped by {stop.signal or 'a signal to another rank'}"
                break
            started = time.perf_counter()
            set_lr(optimizer, t.learning_rate, lr_multiplier(t.lr_schedule, train.step, warmup, t.steps))
            if hasattr(model, "set_step"):  # ELECTRA's curriculum and stage: pure functions of the step
                cast(Electra, model).set_step(train.step, t.steps)
            micro = (make_inputs(setup.corpus.batch(sampler.next_batch()), setup.masker, cfg.objective.sop, mask_gen)
                     for _ in range(t.gradient_accumulation_steps))
            result = objective_step(trained, optimizer, micro, t.gradient_accumulation_steps, device, precision,
                                    t.max_grad_norm, dist, model)
            parts, grad_norm = result.metrics, result.grad_norm
            took = time.perf_counter() - started
            train.count(result, took)
            step = train.step
            diverged = train.diverged(t.max_nonfinite_steps)
            window_time += took
            window_steps += 1
            bar.update(1)
            if step % t.log_every == 0 or step == t.steps or diverged:
                parts = mean_over_ranks(dist, parts)  # a collective: every rank logs at the same steps
                tps = tokens_per_step * window_steps / max(window_time, 1e-9)
                bar.set_postfix(loss=f"{parts['loss']:.3f}", tok_s=f"{tps:,.0f}")
                if log:
                    log.write({"step": step, **{k: round(v, 6) for k, v in parts.items()},
                               "grad_norm": round(float(grad_norm), 4), "lr": optimizer.param_groups[0]["lr"],
                               "tokens_per_second": round(tps, 1), "elapsed_seconds": round(train.elapsed, 2),
                               "paper_flops": setup.paper_flops(step),
                               "model_flops": setup.model_flops(step), "skipped_steps": train.skipped})
                window_time, window_steps = 0.0, 0
            if diverged:  # no checkpoint of this state: `latest` keeps naming the last good one
                good = (f"the last good checkpoint is {train.last_checkpoint}" if train.last_checkpoint
                        else "no checkpoint was written")
                stop_reason = (f"stopped: {train.nonfinite} non-finite steps in a row at step {step} "
                               f"(loss {parts['loss']:g}, grad norm {float(grad_norm):g}); {good}")
                break
            if t.eval_every and step % t.eval_every == 0 and step < t.steps:
                log_eval()
            if step % t.save_every == 0 and step < t.steps and not train.nonfinite:  # mid-streak is not good
                save("periodic")
    bar.close()
    # --- evaluate, checkpoint, cleanup ---------------------------------------------------------
    step = train.step
    final = log_eval() if not diverged and (step == t.steps or stop_reason != "completed") else {}
    # A resume that took no step keeps its checkpoint as it is; a diverged run writes none.
    if not diverged and (latest is None or step > state["step"]):
        save(stop_reason)
    if log is not None:
        log.close()
    summary = {"run": str(run_dir), "step": step, "steps": t.steps, "stop_reason": stop_reason,
               "elapsed_seconds": round(train.elapsed, 1), "skipped_steps": train.skipped, "precision": precision,
               "compiled": compiled, "world_size": dist.world_size, "global_batch": global_batch,
               "paper_flops": setup.paper_flops(step),
               "model_flops": setup.model_flops(step), **final}
    summary.update({f"initial_{k}": v for k, v in initial.items()})
    if started_from:
        summary["init"] = started_from
    stuck = plateau(log.valid_records) if log is not None else None
    if stuck is not None:
        summary["rtd_plateau"] = stuck
    if dist.is_main:
        checkpoint.write_json(summary, run_dir / "summary.json")
    del trained  # the DDP wrapper goes before its process group (see distributed.shutdown)
    shutdown(dist)
    if diverged:  # after summary.json: the CLI prints it as one `electrolite: error:` line and exits 2
        raise UserError(stop_reason, every_rank=dist.enabled)
    return summary


def load_run_config(run_dir: str | os.PathLike) -> PretrainConfig:
    """The resolved config of a run directory."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise UserError(f"{run_dir} is not an electrolite run (no config.yaml)")
    return cfgmod.build(PretrainConfig, cfgmod.load_yaml(path))
