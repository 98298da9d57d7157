"""Where trials come from.

  base      the ask/tell interface every optimiser keeps (and random search)
  backends  DeepHyper CBO and scikit-optimize's GP behind it; `make_optimizer`
  sources   what a phase's manager asks: the optimiser (HPO) or a fixed list (ensemble)
"""
