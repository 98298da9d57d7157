"""One trial: read trial.yaml, train with DDP, keep result.json and checkpoints current.

The whole life of a trial on every rank:
  join the ranks -> read this rank's share of the data -> build the model and
  its weight average -> resume from checkpoint.pt if there is one -> epoch
  after epoch until the budget (trainer/budget.py) says stop: train, validate
  the averaged weights, write result.json (rank 0), checkpoint -> final status.
The last epoch may be partial: a step or wall-time budget ends it where it runs out.
A signal (SIGTERM/SIGUSR1: the allocation or the manager ending us) is agreed
on by all ranks at the next check, checkpointed mid-epoch, and reported as
"interrupted"; a non-finite loss or any exception is reported as "failed".
"""
from __future__ import annotations

import json
import math
import resource
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from trainer import checkpoint, distributed
from trainer.budget import Budget
from trainer.contract.errors import UserError, one_line
from trainer.contract.result import (EXIT_BAD_CONFIG, EXIT_COMPLETED, EXIT_FAILED, EXIT_INTERRUPTED, EpochRecord,
                                     Result)
from trainer.contract.trialconfig import RESULT_FILE, TrialConfig, bound_config, load_trial, stage_two_force_weight
from trainer.contract.typed import to_dict
from trainer.data.loader import EpochLoader
from trainer.data.store import DistributedStore
from trainer.ema import WeightAverage
from trainer.epoch import Clock, Loop, Position, StopSignal, evaluate, train_epoch
from trainer.loss import SUM_FIELDS, LossWeights, summarise
from trainer.memory import check_model_fits
from trainer.models.build import build_model, count_parameters
from trainer.optim import Schedule, full_state_dict, make_optimizer
from trainer.progress import EpochProgress
from trainer.stats import data_stats

_DTYPES = {"fp32": torch.float32, "fp64": torch.float64, "bf16": torch.float32}


class NonFiniteLoss(RuntimeError):
    pass


def run(trial_dir: Path, started: float | None = None) -> int:
    """Run the trial in `trial_dir`; returns the process exit status."""
    started = time.time() if started is None else started
    trial_dir = Path(trial_dir)
    stop = StopSignal()
    result = Result(name=trial_dir.name, started_at=started)
    ctx = None
    try:
        config = load_trial(trial_dir)
        result.name = config.name
        ctx = distributed.init(config.training.device, config.training.threads)
        return _train(trial_dir, config, ctx, result, stop, started)
    except UserError as err:
        return _finish(trial_dir, ctx, result, "failed", str(err), EXIT_BAD_CONFIG)
    except NonFiniteLoss as err:
        return _finish(trial_dir, ctx, result, "failed", str(err), EXIT_FAILED)
    except Exception as err:  # a crash: recorded as data (contract 3), traceback kept in stderr
        import traceback

        traceback.print_exc()
        return _finish(trial_dir, ctx, result, "failed", f"{type(err).__name__}: {err}", EXIT_FAILED)
    finally:
        if ctx is not None:
            distributed.shutdown(ctx)


def _finish(trial_dir: Path, ctx, result: Result, status: str, error: str | None, code: int) -> int:
    result.status, result.error = status, error
    # Before the ranks have joined (ctx is None) every rank fails alike: only the first tells.
    if ctx.is_main if ctx is not None else distributed.discover()[1] == 0:
        print(f"{result.name}: {status}" + (f": {error}" if error else ""), file=sys.stderr, flush=True)
        if not (status == "failed" and _completed_on_record(trial_dir)):
            result.write(trial_dir)  # a completed trial run again (and refused) keeps its record
    return code


def _completed_on_record(trial_dir: Path) -> bool:
    try:
        return json.loads((trial_dir / RESULT_FILE).read_text()).get("status") == "completed"
    except (OSError, ValueError, AttributeError):
        return False


def _train(trial_dir: Path, config: TrialConfig, ctx: distributed.Context, result: Result,
           stop: StopSignal, started: float) -> int:
    cfg = config.training
    torch.manual_seed(cfg.seed)
    dtype = _DTYPES[cfg.precision]
    check_model_fits(config, dtype.itemsize, ctx.device)
    saved = checkpoint.resume_state(trial_dir, config, ctx.device)  # refused early: before the data is read
    paths = [source.path for source in config.data.sources]
    train_store = DistributedStore(paths, "trainset", ctx.comm, config.data.max_train_samples)
    val_store = DistributedStore(paths, "valset", ctx.comm)
    if val_store.num_samples == 0:
        raise UserError(f"{paths[0]}: no validation samples (convert with --val > 0)")
    stats = data_stats(train_store, ctx)
    # Validation (the objective) is always the squared error with the base weights; training may differ.
    metric = LossWeights(cfg.energy_weight, cfg.force_weight, stats.energy_scale, stats.force_scale)
    weights = LossWeights(cfg.energy_weight, cfg.force_weight, stats.energy_scale, stats.force_scale,
                          cfg.loss, cfg.huber_delta)
    stage_two_weights = weights if cfg.stage_two is None else LossWeights(
        cfg.stage_two.energy_weight, stage_two_force_weight(cfg), stats.energy_scale, stats.force_scale,
        cfg.loss, cfg.huber_delta)
    source_weights = [source.weight for source in config.data.sources]
    train_loader = EpochLoader(train_store, cfg.batch_size, cfg.seed, cfg.sampler == "balanced",
                               source_weights, dtype, bootstrap=config.data.bootstrap)
    val_loader = EpochLoader(val_store, cfg.batch_size, cfg.seed, True, source_weights, dtype)
    budget = Budget.plan(cfg, len(train_loader))

    model = build_model(config.model, stats, cfg.activation_checkpointing, dtype).to(ctx.device)
    average = WeightAverage(model, cfg.ema_decay)
    wrapped = (DistributedDataParallel(model, broadcast_buffers=False) if ctx.distributed else model)
    optimizer = make_optimizer(model.parameters(), cfg)
    schedule = Schedule(optimizer, cfg, budget)

    position = Position()
    if saved is not None:
        try:
            model.load_state_dict(saved["model"])
            if average.enabled:
                average.load_state_dict(saved["ema"])
            optimizer.load_state_dict(saved["optimizer"])
            schedule.load_state_dict(saved["scheduler"])
            checkpoint.restore_rng(saved["rng"])
            position = Position(**saved["position"])
            result = Result.from_json(saved["result"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:  # e.g. written before bound_config
            raise UserError(f"{trial_dir / checkpoint.LATEST}: does not fit this trial's model and optimiser "
                            f"({one_line(err, limit=200)}); was trial.yaml changed?") from None
        result.resumed_from_epoch = position.epoch
    result.status, result.error, result.finished_at = "running", None, None
    result.num_parameters = count_parameters(model)
    result.world_size = ctx.world_size
    result.hostnames = distributed.all_gather_objects(ctx, ctx.hostname)
    result.device = str(ctx.device)
    result.startup_seconds = time.time() - started
    result.steps_per_epoch, result.planned_steps = budget.steps_per_epoch, budget.total_steps
    autocast = (torch.autocast(ctx.device.type, dtype=torch.bfloat16) if cfg.precision == "bf16"
                else nullcontext())
    loop = Loop(wrapped, train_loader, optimizer, schedule, average, budget, weights, stage_two_weights,
                cfg.gradient_clip, ctx, stop, Clock(position.elapsed), autocast, dtype)

    bound = bound_config(config)

    def save_checkpoint() -> None:
        optimizer_state = full_state_dict(optimizer)  # collective under ZeRO-1
        if ctx.is_main:
            checkpoint.save(trial_dir / checkpoint.LATEST, {
                "model": model.state_dict(), "optimizer": optimizer_state,
                **({"ema": average.state_dict()} if average.enabled else {}),
                "scheduler": schedule.state_dict(), "rng": checkpoint.rng_state(),
                "position": {**position.__dict__, "elapsed": loop.clock()}, "result": result.to_json(),
                "model_config": to_dict(config.model), "stats": stats.to_dict(), "bound_config": bound})

    # How these weights came to be, for an ensemble's manifest (members differ by seed and data).
    trained_on = {"seed": cfg.seed, "bootstrap": config.data.bootstrap, "train_samples": train_store.num_samples,
                  "distinct_train_samples": train_store.num_samples if train_loader.population is None
                  else int(len(np.unique(train_loader.population))),
                  "max_neighbours": train_store.infos[0].max_neighbours}
    if ctx.is_main:
        result.write(trial_dir)
    if stop.agreed(ctx, position.elapsed)[0]:  # came during start-up: nothing trained, the checkpoint stands
        return _finish(trial_dir, ctx, result, "interrupted", f"stopped by signal {stop.received or 'on another rank'} "
                       "before training started", EXIT_INTERRUPTED)
    stale = _epochs_since_best(result)
    # At an epoch boundary the budget is asked again (a completed trial run again stays completed);
    # mid-epoch (resuming after a signal) the epoch is finished first, as it would have been.
    reason = budget.stop_reason(position.steps_done, position.elapsed, stale) if position.step == 0 else None
    while reason is None:
        progress = EpochProgress(ctx.is_main, position.epoch + 1, budget.epochs, len(train_loader))
        epoch_start = time.time() - position.seconds
        interrupted = train_epoch(loop, position, progress)
        position.seconds = time.time() - epoch_start
        if interrupted:
            save_checkpoint()
            return _finish(trial_dir, ctx, result, "interrupted",
                           f"stopped by signal {stop.received or 'on another rank'}", EXIT_INTERRUPTED)
        train_sums = distributed.all_sum(ctx, position.sums)
        train = summarise(train_sums, metric)
        val = summarise(evaluate(average.model, val_loader, metric, ctx, autocast, dtype), metric)
        if not (math.isfinite(train["loss"]) and math.isfinite(val["loss"])):
            raise NonFiniteLoss(f"non-finite loss at epoch {position.epoch + 1} "
                                f"(train {train['loss']}, validation {val['loss']})")
        seconds = time.time() - epoch_start
        schedule.after_epoch(val["loss"])
        record = EpochRecord(position.epoch + 1, train["loss"], val["loss"], val["energy_mae"],
                             val["force_mae"], seconds,
                             train_sums[SUM_FIELDS.index("graphs")] / max(position.seconds, 1e-9),
                             schedule.learning_rate, position.steps_done)
        improved = result.add_epoch(record)
        stale = 0 if improved else stale + 1
        result.steps_done = position.steps_done
        result.peak_memory_bytes = int(distributed.all_max(ctx, [float(_peak_memory(ctx.device))])[0])
        position = Position(epoch=position.epoch + 1, steps_done=position.steps_done,
                            elapsed=distributed.all_max(ctx, [loop.clock()])[0])
        progress.close(record)
        if ctx.is_main and improved and config.output.keep_best:
            checkpoint.save(trial_dir / checkpoint.BEST, {
                "model": average.state_dict(), "model_config": to_dict(config.model),
                "stats": stats.to_dict(), "epoch": record.epoch, "val_loss": record.val_loss,
                "steps": record.steps, "training": trained_on})
        reason = budget.stop_reason(position.steps_done, position.elapsed, stale)
        if position.epoch % config.output.checkpoint_every == 0 or reason is not None:
            save_checkpoint()
        if ctx.is_main:
            result.write(trial_dir)
    result.stop_reason = reason
    return _finish(trial_dir, ctx, result, "completed", None, EXIT_COMPLETED)


def _epochs_since_best(result: Result) -> int:
    if result.best_epoch is None:
        return 0
    return len(result.epochs) - result.best_epoch


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
