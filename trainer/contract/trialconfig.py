"""The trial contract: the schema of `TRIAL_DIR/trial.yaml` (ARCHITECTURE.md, contract 1).

The manager writes a fully resolved trial.yaml; the trainer reads it and
knows nothing else about the search. Hyperparameter names follow HydraGNN's
configs (mpnn_type, num_conv_layers, hidden_dim, num_fc_layers, fc_dim).
This module is torch-free so that the manager can import it.
"""
from __future__ import annotations

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
    # MACE only (mace-torch's --max_L and --correlation); the other backbones ignore them.
    max_L: int = bounded(1, low=0, high=3, doc="MACE: highest rotation order L of the node features")
    correlation: int = bounded(3, low=1, high=4, doc="MACE: correlation order of each layer (body order - 1)")


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = bounded(10, low=1, doc="epoch budget (the HPO fidelity) or maximum for full training")
    patience: int | None = bounded(None, low=1, doc="stop after this many epochs without a better validation loss; null: never")
    batch_size: int = bounded(32, low=1, doc="graphs per rank per step")
    sampler: Literal["balanced", "fixed"] = field(
        default="balanced", metadata={"doc": "balanced: equal cost per rank each step; fixed: equal count"})
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    learning_rate: float = bounded(1e-3, low=0.0, low_exclusive=True)
    weight_decay: float = bounded(0.0, low=0.0)
    lr_schedule: Literal["constant", "cosine", "plateau"] = field(
        default="plateau", metadata={"doc": "plateau halves the rate when validation stalls"})
    gradient_clip: float | None = bounded(10.0, low=0.0, low_exclusive=True, doc="max gradient norm; null: off")
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


def load_trial(trial_dir: str | Path) -> TrialConfig:
    """Read TRIAL_DIR/trial.yaml; relative data paths are taken from the trial directory."""
    trial_dir = Path(trial_dir)
    path = trial_dir / TRIAL_FILE
    config = typed.load(TrialConfig, path)
    sources = [SourceConfig(path=str((trial_dir / s.path).resolve()), weight=s.weight) for s in config.data.sources]
    data = DataConfig(sources=sources, max_train_samples=config.data.max_train_samples)
    return TrialConfig(data=data, model=config.model, training=config.training,
                       output=config.output, name=config.name)


def write_trial(trial_dir: str | Path, config: TrialConfig) -> Path:
    """Write TRIAL_DIR/trial.yaml (atomically), creating the directory."""
    trial_dir = Path(trial_dir)
    trial_dir.mkdir(parents=True, exist_ok=True)
    path = trial_dir / TRIAL_FILE
    atomic_write_text(path, yaml.safe_dump(typed.to_dict(config), sort_keys=False))
    return path
