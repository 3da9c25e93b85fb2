"""`electrolite study`: the study's pre-trainings and fine-tunes, one at a time (``run_study``) or, with
``--jobs N``, N at a time (``run_parallel``).

A small model does not keep every core busy, and on a CPU two one-thread processes get more done
than one two-thread process (STUDY.md's 4-layer ELECTRA: about 1.4-1.6 steps/s in each of two such
processes side by side, about 1.5 in one two-thread process; not measured on an idle machine). Each
unit of work — one setup's pre-training, or one (setup, task, seed) fine-tune — runs in its own
spawned process with ``cores // N`` torch threads and writes the same files as ``--jobs 1``. This
process only schedules and rewrites results.json after each unit.

Order: every pending pre-training first, then the fine-tunes seed by seed as in ``--jobs 1``; a
fine-tune starts once the run it starts from has finished pre-training (for a ``from_scratch``
setup, the run whose architecture it borrows), so fine-tunes of a finished setup overlap the
pre-training of the others.

Failures and signals: a unit that fails stops the scheduling; the others still running are sent
SIGTERM (a pre-training checkpoints and stops, a fine-tune is dropped and redone on the next run),
and the failure is reported in one line. SIGTERM or SIGINT to this process does the same without
the error. Re-running the same command resumes, with any ``--jobs``.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import sys
from pathlib import Path
from typing import Any

import torch

from electrolite import pretrain
from electrolite.errors import UserError
from electrolite.studies.study import (
    Study,
    check_study_dir,
    finetune_label,
    finetune_one,
    pending_finetunes,
    pretraining_finished,
    pretraining_label,
    pretraining_state,
    read_json_if_any,
    setup_pretrain_config,
    write_results,
)

__all__ = ["run_parallel", "run_study"]

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run_study(study: Study, out: Path, log=print, jobs: int = 1) -> dict[str, Any]:
    """Pre-train every setup, fine-tune every (setup, task, seed); returns results.json's content.

    ``jobs`` > 1 runs that many pre-trainings or fine-tunes at once, each in its own process
    (``run_parallel``); the study directory and its results are the same either way.
    """
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    check_study_dir(study, out)
    if jobs > 1:
        return run_parallel(study, out, log, jobs)
    runs: dict[str, dict[str, Any]] = {}
    for setup, steps, per_step, done in pretraining_state(study, out):
        if done is None:
            log(f"study: {pretraining_label(setup, steps, per_step)}")
            done = pretrain.run(setup_pretrain_config(study, setup, out, steps))
            if not pretraining_finished(done, study):  # a signal
                log(f"study: pre-training {setup.name} {done['stop_reason']} at step {done['step']}; "
                    f"re-run the same command to resume")
                return write_results(study, out, runs)
        runs[setup.name] = done
    write_results(study, out, runs)
    for setup, task, seed, task_dir in pending_finetunes(study, out):
        log(f"study: {finetune_label(setup, task, seed)}")
        finetune_one(study, setup, task, seed, out, task_dir)
        write_results(study, out, runs)
    return write_results(study, out, runs)


def _unit_main(study: Study, out: Path, unit: tuple, threads: int, errors) -> None:
    """A spawned process: one pre-training or one fine-tune."""
    torch.set_num_threads(threads)
    try:
        if unit[0] == "pretrain":
            _, setup, steps, _ = unit
            pretrain.run(setup_pretrain_config(study, setup, out, steps))  # checkpoints and returns on SIGTERM/SIGINT
        else:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the scheduler decides; it sends SIGTERM
            _, setup, task, seed, task_dir = unit
            finetune_one(study, setup, task, seed, out, task_dir)
    except UserError as e:
        errors.put((_name(unit), str(e)))
        sys.exit(2)


def _name(unit: tuple) -> str:
    if unit[0] == "pretrain":
        return f"pre-training {unit[1].name}"
    return finetune_label(*unit[1:4])


def run_parallel(study: Study, out: Path, log, jobs: int) -> dict[str, Any]:
    threads = max(1, torch.get_num_threads() // jobs)
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch's thread pools
    errors = ctx.Queue()
    runs: dict[str, dict[str, Any]] = {}
    todo: list[tuple] = []
    for setup, steps, per_step, done in pretraining_state(study, out):
        if done is None:
            todo.append(("pretrain", setup, steps, per_step))
        else:
            runs[setup.name] = done
    todo += [("finetune", *unit) for unit in pending_finetunes(study, out)]
    write_results(study, out, runs)
    log(f"study: {len(todo)} units to run, {jobs} at a time, {threads} torch thread(s) each")

    stop: list[str] = []
    previous = {s: signal.signal(s, lambda signum, frame: stop.append(signal.Signals(signum).name)) for s in _STOP_SIGNALS}
    running: dict[Any, tuple] = {}  # process -> unit
    failure = ""
    received: dict[str, str] = {}  # unit name -> its error line
    try:
        while (todo or running) and not stop and not failure:
            while len(running) < jobs and not stop:
                unit = next((u for u in todo if _ready(u, runs)), None)
                if unit is None:
                    break
                todo.remove(unit)
                log(f"study: {pretraining_label(*unit[1:]) if unit[0] == 'pretrain' else _name(unit)}")
                proc = ctx.Process(target=_unit_main, args=(study, out, unit, threads, errors), daemon=False)
                proc.start()
                running[proc] = unit
            if not running:
                if todo:  # nothing can start: a pre-training a fine-tune needs did not finish
                    failure = f"{_name(todo[0])} waits for a pre-training that did not finish"
                break
            multiprocessing.connection.wait([p.sentinel for p in running], timeout=1.0)
            for proc in [p for p in running if not p.is_alive()]:
                unit = running.pop(proc)
                proc.join()
                message = _finished(unit, proc.exitcode, study, out, runs, errors, received)
                if not stop:  # a unit that a signal to us also stopped is no failure
                    failure = failure or message
                write_results(study, out, runs)
    finally:
        for proc in running:  # stopping: pre-trainings checkpoint on SIGTERM, fine-tunes are redone later
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)
        for proc, unit in running.items():
            proc.join()
            if unit[0] == "pretrain":
                _finished(unit, proc.exitcode, study, out, runs, errors, received)
        for s, handler in previous.items():
            signal.signal(s, handler)
    results = write_results(study, out, runs)
    if failure:
        raise UserError(failure)
    if stop or todo:
        log(f"study: stopped by {stop[0] if stop else 'a signal'}; re-run the same command to resume")
    return results


def _ready(unit: tuple, runs: dict[str, dict[str, Any]]) -> bool:
    if unit[0] == "pretrain":
        return True
    setup = unit[1]
    return (setup.from_scratch or setup.name) in runs


def _finished(unit: tuple, exitcode: int | None, study: Study, out: Path, runs: dict[str, dict[str, Any]],
              errors, received: dict[str, str]) -> str:
    """Records a finished unit; returns a failure line, "" when it did its work."""
    name = _name(unit)
    if exitcode == 2:  # a UserError: the unit sent its one line
        try:
            while name not in received:
                other, message = errors.get(timeout=5)
                received[other] = message
        except queue.Empty:
            return f"{name} failed (exit code 2); its output is above"
        return f"{name}: {received[name]}"
    if unit[0] == "pretrain":
        summary = read_json_if_any(out / "pretrain" / unit[1].name / "summary.json")
        if pretraining_finished(summary, study):
            runs[unit[1].name] = summary
            return ""
        if summary and exitcode == 0:
            return f"{name} {summary['stop_reason']} at step {summary['step']}; re-run the same command to resume"
    elif exitcode == 0:
        return ""
    return f"{name} failed (exit code {exitcode}); its output is above"
