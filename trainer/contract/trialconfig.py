"""The trial contract: the schema of `TRIAL_DIR/trial.yaml` (ARCHITECTURE.md, contract 1).

The manager writes a fully resolved trial.yaml; the trainer reads it and
knows nothing else about the search. Hyperparameter names follow HydraGNN's
configs (mpnn_type, num_conv_layers, hidden_dim, num_fc_layers, fc_dim).
This module is torch-free so that the manager can import it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from trainer.contract import typed
from trainer.contract.atomicio import atomic_write_text
from trainer.contract.typed import Invalid, bounded

MPNN_TYPES = ("EGNN", "PNA", "SchNet", "PaiNN", "MACE")
TRIAL_FILE = "trial.yaml"
RESULT_FILE = "result.json"


@dataclass(frozen=True)
class SourceConfig:
    path: str = field(metadata={"doc": "ADIOS2 dataset (.bp) written by `gfm-data convert`"})
    weight: float = bounded(1.0, low=0.0, low_exclusive=True, doc="weight of this source's samples in the loss")


@dataclass(frozen=True)
class DataConfig:
    sources: list[SourceConfig] = field(metadata={"doc": "one or more datasets, combined for training"})
    max_train_samples: int | None = bounded(None, low=1, doc="use only the first N training samples (debugging, benchmarks)")
    bootstrap: bool = field(default=False, metadata={
        "doc": "train on a resample with replacement of the training split (as many samples), drawn from "
               "training.seed: each ensemble member sees different data (bagging)"})

    def check(self) -> None:
        if not self.sources:
            raise Invalid("sources", "at least one dataset is needed")


@dataclass(frozen=True)
class ModelConfig:
    mpnn_type: Literal["EGNN", "PNA", "SchNet", "PaiNN", "MACE"] = field(
        default="EGNN", metadata={"doc": "message-passing backbone (MACE needs `pip install .[mace]`)"})
    num_conv_layers: int = bounded(3, low=1, high=6, doc="message-passing layers")
    hidden_dim: int = bounded(50, low=1, doc="width of node features")
    num_fc_layers: int = bounded(2, low=1, high=3, doc="hidden layers of each output head")
    fc_dim: int = bounded(50, low=1, doc="width of the head layers")
    num_radial: int = bounded(16, low=1, doc="radial basis functions that encode distances")
    force_mode: Literal["direct", "conservative"] = field(
        default="direct", metadata={"doc": "direct: an equivariant force head; conservative: -dE/dx by autograd"})
    element_scale_shift: bool = field(
        default=True, metadata={"doc": "learn a scale and a shift of the atomic energies per element"})
    # MACE only (mace-torch's --max_L and --correlation); the other backbones ignore them.
    max_L: int = bounded(1, low=0, high=3, doc="MACE: highest rotation order L of the node features")
    correlation: int = bounded(3, low=1, high=4, doc="MACE: correlation order of each layer (body order - 1)")


@dataclass(frozen=True)
class StageTwoConfig:
    """The last part of the budget: a lower learning rate and more weight on energies (after MACE)."""
    fraction: float = bounded(0.2, low=0.0, low_exclusive=True,
                              doc="last fraction of the budget (of its steps, or seconds where the wall time ends it)")
    learning_rate_factor: float = bounded(0.1, low=0.0, high=1.0, low_exclusive=True,
                                          doc="stage two's learning rate: at most this x learning_rate")
    energy_weight: float = bounded(10.0, low=0.0, doc="loss weight of energy per atom in stage two")
    force_weight: float | None = bounded(None, low=0.0, doc="loss weight of forces in stage two; null: unchanged")

    def check(self) -> None:
        if not self.fraction < 1.0:
            raise Invalid("fraction", f"must be less than 1 (stage one needs some of the budget), got {self.fraction}")


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int | None = bounded(10, low=1, doc="epoch budget (the HPO fidelity, or full training's); "
                                                 "null: none (max_steps or max_seconds ends training)")
    min_steps: int | None = bounded(None, low=1, doc="at least this many optimiser steps: past `epochs` where "
                                                     "epochs are short, and no early stopping before")
    max_steps: int | None = bounded(None, low=1, doc="step budget: at most this many optimiser steps")
    max_seconds: float | None = bounded(None, low=0.0, low_exclusive=True,
                                        doc="wall-time budget: seconds of training and validation "
                                            "(start-up excluded, resumed runs summed)")
    patience: int | None = bounded(None, low=1, doc="stop after this many epochs without a better validation loss; null: never")
    batch_size: int = bounded(32, low=1, doc="graphs per rank per step")
    sampler: Literal["balanced", "fixed"] = field(
        default="balanced", metadata={"doc": "balanced: equal cost per rank each step; fixed: equal count"})
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    amsgrad: bool = field(default=False, metadata={"doc": "AMSGrad variant of adam/adamw"})
    # Measured on ethanol (SMALL, cosine, 3000 steps): 3e-3 cut EGNN's force error by 29 % against 1e-3, and
    # 1e-2 was no better for EGNN (better for SchNet) but worse for MEDIUM EGNN; see README, "Accuracy".
    learning_rate: float = bounded(3e-3, low=0.0, low_exclusive=True)
    weight_decay: float = bounded(0.0, low=0.0)
    lr_schedule: Literal["constant", "cosine", "plateau"] = field(
        default="cosine", metadata={"doc": "cosine: over the budget (its steps, or seconds); "
                                           "plateau halves the rate when validation stalls"})
    ema_decay: float | None = bounded(0.999, low=0.0, high=1.0, doc="moving average of the weights, the ones "
                                                                     "validated and kept in best.pt; null: off")
    stage_two: StageTwoConfig | None = field(default_factory=StageTwoConfig, metadata={
        "doc": "the budget's last part at a lower learning rate and a higher energy weight; null: off"})
    gradient_clip: float | None = bounded(10.0, low=0.0, low_exclusive=True, doc="max gradient norm; null: off")
    loss: Literal["mse", "huber"] = field(default="mse", metadata={
        "doc": "training loss of the normalised errors (the validation loss is always MSE)"})
    huber_delta: float = bounded(1.0, low=0.0, low_exclusive=True, doc="huber: errors beyond this many scales "
                                                                       "(energy std per atom, RMS force) count linearly")
    energy_weight: float = bounded(1.0, low=0.0, doc="loss weight of energy per atom")
    # Measured on ethanol (SMALL EGNN, 30 epochs): weight 10 gave the lowest force error; 1 and 100 did worse.
    force_weight: float = bounded(10.0, low=0.0, doc="loss weight of forces")
    seed: int = bounded(0, low=0)
    precision: Literal["fp32", "fp64", "bf16"] = field(default="fp32", metadata={"doc": "bf16: autocast on GPU"})
    activation_checkpointing: bool = field(default=False, metadata={"doc": "recompute each conv layer in backward"})
    zero1: bool = field(default=False, metadata={"doc": "shard optimiser state across ranks (ZeRO-1)"})
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = bounded(None, low=1, doc="torch threads per rank; null: cores / ranks on the node")

    def check(self) -> None:
        if self.energy_weight == 0 and self.force_weight == 0:
            raise Invalid("force_weight", "energy_weight and force_weight cannot both be 0")
        if self.epochs is None and self.max_steps is None and self.max_seconds is None:
            raise Invalid("epochs", "no budget: set epochs, max_steps or max_seconds")
        if self.min_steps is not None and self.max_steps is not None and self.min_steps > self.max_steps:
            raise Invalid("min_steps", f"must be at most max_steps ({self.max_steps}), got {self.min_steps}")
        if self.ema_decay is not None and not self.ema_decay < 1.0:
            raise Invalid("ema_decay", f"must be less than 1 (1 would never move), got {self.ema_decay}")
        if self.amsgrad and self.optimizer == "sgd":
            raise Invalid("amsgrad", "AMSGrad is a variant of adam and adamw, not of sgd")
        stage = self.stage_two
        if stage is not None and stage.energy_weight == 0 and stage_two_force_weight(self) == 0:
            raise Invalid("stage_two.force_weight", "stage two's energy and force weights cannot both be 0")


def stage_two_force_weight(training: TrainingConfig) -> float:
    stage = training.stage_two
    return training.force_weight if stage is None or stage.force_weight is None else stage.force_weight


@dataclass(frozen=True)
class OutputConfig:
    checkpoint_every: int = bounded(1, low=1, doc="epochs between checkpoints")
    keep_best: bool = field(default=True, metadata={"doc": "also keep the weights of the best validation epoch"})


@dataclass(frozen=True)
class TrialConfig:
    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    name: str = field(default="trial", metadata={"doc": "a label for logs"})

    def check(self) -> None:
        if self.model.mpnn_type == "MACE" and self.training.activation_checkpointing:
            # mace-torch's layers give recomputed tensors of other shapes (torch's CheckpointError).
            raise Invalid("training.activation_checkpointing", "is not supported with mpnn_type MACE")


def load_trial(trial_dir: str | Path) -> TrialConfig:
    """Read TRIAL_DIR/trial.yaml; relative data paths are taken from the trial directory."""
    trial_dir = Path(trial_dir)
    path = trial_dir / TRIAL_FILE
    config = typed.load(TrialConfig, path)
    sources = [SourceConfig(path=str((trial_dir / s.path).resolve()), weight=s.weight) for s in config.data.sources]
    data = dataclasses.replace(config.data, sources=sources)
    return TrialConfig(data=data, model=config.model, training=config.training,
                       output=config.output, name=config.name)


def write_trial(trial_dir: str | Path, config: TrialConfig) -> Path:
    """Write TRIAL_DIR/trial.yaml (atomically), creating the directory."""
    trial_dir = Path(trial_dir)
    trial_dir.mkdir(parents=True, exist_ok=True)
    path = trial_dir / TRIAL_FILE
    atomic_write_text(path, yaml.safe_dump(typed.to_dict(config), sort_keys=False))
    return path


# What a trial may change between runs of its directory and still resume its checkpoint: the
# budget (a trial continued to a longer one, e.g. a higher fidelity), where and how fast it runs,
# the output, and where its datasets now lie (a run directory copied elsewhere). Everything else
# says what the checkpoint's weights and optimiser state are of.
RESUMABLE_KEYS = ("name", "output", "training.epochs", "training.min_steps", "training.max_steps",
                  "training.max_seconds", "training.patience", "training.threads", "training.device")


def bound_config(config: TrialConfig) -> dict:
    """The part of a trial's configuration a checkpoint is bound to, flat (dotted keys)."""
    flat: dict = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        elif not any(prefix == k or prefix.startswith(k + ".") for k in RESUMABLE_KEYS):
            flat[prefix] = value

    data = typed.to_dict(config)
    for source in data["data"]["sources"]:
        source["path"] = Path(source["path"]).name
    walk("", data)
    return flat


def config_changes(saved: dict, current: dict) -> list[str]:
    """`key: old -> new` for every bound key that differs."""
    return [f"{key}: {saved.get(key, '(unset)')!r} -> {current.get(key, '(unset)')!r}"
            for key in sorted(set(saved) | set(current)) if saved.get(key) != current.get(key)]
