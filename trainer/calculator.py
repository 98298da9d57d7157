"""`from trainer.calculator import EnsembleCalculator`, the import path users' scripts rely on.

The code lives in trainer/ensemble/calculator.py.
"""
from trainer.ensemble.calculator import EnsembleCalculator

__all__ = ["EnsembleCalculator"]
