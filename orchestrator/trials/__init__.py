"""The trials and their record.

  schema     the database's tables, statuses and allowed transitions
  db         TrialDB: the manager's writer (SQLite, WAL; the truth, contract 4)
  frames     read-only pandas tables (`load_trials`, `load_curves`, `load_events`)
  outcome    what happened to a trial, from its files and its launcher's exit status
  runconfig  RUN_DIR/run.yaml: the settings of a run, and the base trial every proposal fills
"""
