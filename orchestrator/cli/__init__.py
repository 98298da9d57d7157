"""The manager's command lines: `gfm-hpo` (hpo.py) and `gfm-ensemble` (ensemble.py)."""
