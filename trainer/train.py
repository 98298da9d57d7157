"""One trial: read trial.yaml, train with DDP, keep result.json and checkpoints current.

The whole life of a trial on every rank:
  join the ranks -> read this rank's share of the data -> build the model ->
  resume from checkpoint.pt if there is one -> for each epoch: train, validate,
  write result.json (rank 0), checkpoint -> final status.
A signal (SIGTERM/SIGUSR1: the allocation or the manager ending us) is agreed
on by all ranks at the next check, checkpointed mid-epoch, and reported as
"interrupted"; a non-finite loss or any exception is reported as "failed".
"""
from __future__ import annotations

import math
import resource
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from trainer import checkpoint, distributed
from trainer.contract.errors import UserError
from trainer.data.loader import EpochLoader
from trainer.data.store import DistributedStore
from trainer.loss import SUM_FIELDS, LossWeights, batch_loss, summarise
from trainer.models.build import build_model, count_parameters
from trainer.optim import Schedule, full_state_dict, make_optimizer
from trainer.progress import EpochProgress
from trainer.contract.result import (EXIT_BAD_CONFIG, EXIT_COMPLETED, EXIT_FAILED, EXIT_INTERRUPTED, EpochRecord,
                            Result)
from trainer.contract.trialconfig import TrialConfig, load_trial
from trainer.contract.typed import to_dict
from trainer.stats import data_stats

STOP_CHECK_STEPS = 10      # steps between collective checks for a stop signal (one tiny all-reduce)
_DTYPES = {"fp32": torch.float32, "fp64": torch.float64, "bf16": torch.float32}


class NonFiniteLoss(RuntimeError):
    pass


class StopSignal:
    """Remembers SIGTERM/SIGUSR1; all ranks agree on it at step boundaries."""

    def __init__(self) -> None:
        self.received: int | None = None
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame) -> None:
        self.received = signum

    def agreed(self, ctx: distributed.Context) -> bool:
        return distributed.all_max(ctx, [1.0 if self.received else 0.0])[0] > 0


@dataclass
class Position:
    """Where training stands: the epoch in progress and the steps of it already done."""
    epoch: int = 0
    step: int = 0
    sums: list[float] = field(default_factory=lambda: [0.0] * len(SUM_FIELDS))
    seconds: float = 0.0


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
        result.write(trial_dir)
    return code


def _train(trial_dir: Path, config: TrialConfig, ctx: distributed.Context, result: Result,
           stop: StopSignal, started: float) -> int:
    cfg = config.training
    torch.manual_seed(cfg.seed)
    dtype = _DTYPES[cfg.precision]
    paths = [source.path for source in config.data.sources]
    train_store = DistributedStore(paths, "trainset", ctx.comm, config.data.max_train_samples)
    val_store = DistributedStore(paths, "valset", ctx.comm)
    if val_store.num_samples == 0:
        raise UserError(f"{paths[0]}: no validation samples (convert with --val > 0)")
    stats = data_stats(train_store, ctx)
    weights = LossWeights(cfg.energy_weight, cfg.force_weight, stats.energy_scale, stats.force_scale)
    source_weights = [source.weight for source in config.data.sources]
    train_loader = EpochLoader(train_store, cfg.batch_size, cfg.seed, cfg.sampler == "balanced",
                               source_weights, dtype)
    val_loader = EpochLoader(val_store, cfg.batch_size, cfg.seed, True, source_weights, dtype)

    model = build_model(config.model, stats, cfg.activation_checkpointing, dtype).to(ctx.device)
    wrapped = (DistributedDataParallel(model, broadcast_buffers=False) if ctx.distributed else model)
    optimizer = make_optimizer(model.parameters(), cfg)
    schedule = Schedule(optimizer, cfg)

    position = Position()
    saved = checkpoint.load(trial_dir / checkpoint.LATEST, ctx.device)
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["scheduler"])
        checkpoint.restore_rng(saved["rng"])
        position = Position(**saved["position"])
        result = Result.from_json(saved["result"])
        result.resumed_from_epoch = position.epoch
    result.status, result.error, result.finished_at = "running", None, None
    result.num_parameters = count_parameters(model)
    result.world_size = ctx.world_size
    result.hostnames = distributed.all_gather_objects(ctx, ctx.hostname)
    result.device = str(ctx.device)
    result.startup_seconds = time.time() - started

    def save_checkpoint() -> None:
        optimizer_state = full_state_dict(optimizer)  # collective under ZeRO-1
        if ctx.is_main:
            checkpoint.save(trial_dir / checkpoint.LATEST, {
                "model": model.state_dict(), "optimizer": optimizer_state,
                "scheduler": schedule.state_dict(), "rng": checkpoint.rng_state(),
                "position": position.__dict__, "result": result.to_json(),
                "model_config": to_dict(config.model), "stats": stats.to_dict()})

    if ctx.is_main:
        result.write(trial_dir)
    stale = _epochs_since_best(result)
    autocast = (torch.autocast(ctx.device.type, dtype=torch.bfloat16) if cfg.precision == "bf16"
                else nullcontext())
    while position.epoch < cfg.epochs and (cfg.patience is None or stale < cfg.patience):
        progress = EpochProgress(ctx.is_main, position.epoch + 1, cfg.epochs, len(train_loader))
        epoch_start = time.time() - position.seconds
        interrupted = _train_epoch(wrapped, train_loader, optimizer, weights, cfg.gradient_clip,
                                   ctx, position, stop, autocast, dtype, progress)
        position.seconds = time.time() - epoch_start
        if interrupted:
            save_checkpoint()
            return _finish(trial_dir, ctx, result, "interrupted",
                           f"stopped by signal {stop.received or 'on another rank'}", EXIT_INTERRUPTED)
        train = summarise(distributed.all_sum(ctx, position.sums), weights)
        val = summarise(_evaluate(model, val_loader, weights, ctx, autocast, dtype), weights)
        if not (math.isfinite(train["loss"]) and math.isfinite(val["loss"])):
            raise NonFiniteLoss(f"non-finite loss at epoch {position.epoch + 1} "
                                f"(train {train['loss']}, validation {val['loss']})")
        seconds = time.time() - epoch_start
        schedule.after_epoch(val["loss"])
        record = EpochRecord(position.epoch + 1, train["loss"], val["loss"], val["energy_mae"],
                             val["force_mae"], seconds, train_store.num_samples / position.seconds,
                             schedule.learning_rate)
        improved = result.add_epoch(record)
        stale = 0 if improved else stale + 1
        result.peak_memory_bytes = int(distributed.all_max(ctx, [float(_peak_memory(ctx.device))])[0])
        position = Position(epoch=position.epoch + 1)
        progress.close(record)
        if ctx.is_main and improved and config.output.keep_best:
            checkpoint.save(trial_dir / checkpoint.BEST, {
                "model": model.state_dict(), "model_config": to_dict(config.model),
                "stats": stats.to_dict(), "epoch": record.epoch, "val_loss": record.val_loss})
        if position.epoch % config.output.checkpoint_every == 0 or position.epoch == cfg.epochs:
            save_checkpoint()
        if ctx.is_main:
            result.write(trial_dir)
    result.stop_reason = "early stopping" if position.epoch < cfg.epochs else "epoch budget"
    return _finish(trial_dir, ctx, result, "completed", None, EXIT_COMPLETED)


def _train_epoch(model, loader: EpochLoader, optimizer, weights: LossWeights, clip: float | None,
                 ctx: distributed.Context, position: Position, stop: StopSignal, autocast, dtype,
                 progress: EpochProgress) -> bool:
    """Train from `position.step` to the end of the epoch; True if stopped by a signal."""
    model.train()
    sums = torch.tensor(position.sums, dtype=torch.float64)
    for step, (batch, global_graphs, global_atoms) in enumerate(loader.epoch(position.epoch)):
        if step < position.step:
            continue  # resuming mid-epoch: the plan is deterministic, so skip what was done
        batch = batch.to(ctx.device, dtype)
        with autocast:
            energy, forces = model(batch)
        loss, batch_sums = batch_loss(energy.to(dtype), forces.to(dtype), batch, weights,
                                      global_graphs, global_atoms)
        optimizer.zero_grad(set_to_none=True)
        # DDP averages gradients over ranks; the loss is already a share of the global mean.
        (loss * ctx.world_size).backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        sums += batch_sums.cpu()
        position.step = step + 1
        position.sums = sums.tolist()
        progress.update(position.step)
        if position.step % STOP_CHECK_STEPS == 0 and stop.agreed(ctx):
            return True
    return stop.agreed(ctx)


def _evaluate(model, loader: EpochLoader, weights: LossWeights, ctx: distributed.Context, autocast,
              dtype) -> list[float]:
    """Error sums over this rank's validation share, summed over ranks."""
    model.eval()
    sums = torch.zeros(len(SUM_FIELDS), dtype=torch.float64)
    # Conservative forces differentiate the energy, so gradients stay on (without a graph to keep).
    grad = torch.enable_grad() if model.config.force_mode == "conservative" else torch.no_grad()
    with grad:
        for batch in loader.local_batches():
            batch = batch.to(ctx.device, dtype)
            with autocast:
                energy, forces = model(batch)
            _, batch_sums = batch_loss(energy.detach().to(dtype), forces.detach().to(dtype), batch,
                                       weights, 1, 1)
            sums += batch_sums.cpu()
    return distributed.all_sum(ctx, sums.tolist())


def _epochs_since_best(result: Result) -> int:
    if result.best_epoch is None:
        return 0
    return len(result.epochs) - result.best_epoch


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
