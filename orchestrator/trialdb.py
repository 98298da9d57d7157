"""The trial database's public names, where users' notebooks and scripts import them from.

    from orchestrator.trialdb import load_trials, load_curves

The code lives in orchestrator/trials/ (db.py, frames.py); this module keeps the import path stable.
"""
from orchestrator.trials.db import TrialDB
from orchestrator.trials.frames import load_curves, load_events, load_trials

__all__ = ["TrialDB", "load_curves", "load_events", "load_trials"]
