"""A run's phases, each one manager over the same slices, database and trial executor.

  run       what every phase shares: one manager per run directory, the wiring, the log
  hpo       the search (`gfm-hpo run`, `resume`)
  ensemble  the top-K configurations trained to convergence (`gfm-ensemble train`)
"""
