"""The deep ensemble at inference: members, batched mean ± std prediction, evaluation, calibration.

  manifest          ENSEMBLE_DIR/manifest.json and the members' verified weights
  build             ENSEMBLE_DIR from trained members (called by `gfm-ensemble train`)
  predict           the members run together on batches of structures
  uncertainty       error-vs-std statistics: Spearman, coverage, miscalibration area
  evaluate          `gfm-ensemble evaluate` / `calibrate` on labelled data
  evalplots         parity, calibration and error-vs-std figures
  prediction_files  predictions written as extxyz, csv or json
  calculator        the ASE calculator (also `trainer.calculator.EnsembleCalculator`)
  cli               the predict / evaluate / calibrate / info commands
"""
