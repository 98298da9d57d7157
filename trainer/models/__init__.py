"""Backbones (EGNN, PNA, SchNet, PaiNN; MACE via mace-torch), output heads, and the model built from a `ModelConfig`."""
from trainer.models.build import DataStats, EnergyForceModel, build_model, count_parameters

__all__ = ["DataStats", "EnergyForceModel", "build_model", "count_parameters"]
