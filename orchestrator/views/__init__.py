"""What a user sees of a run: status, live progress line, report figures, the dry-run plan.

  status   `gfm-hpo status`
  display  the manager's live progress line
  figures  one function per figure (also used by notebooks/inspect_trials.ipynb)
  report   `gfm-hpo report`: the figures as PNG files and a summary
  plan     `gfm-hpo launch --dry-run`: the slices and their exact commands
"""
