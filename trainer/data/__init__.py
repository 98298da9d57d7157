"""Atomistic data: structures -> cleaned, labelled graphs -> ADIOS2 files -> per-rank stores -> batches."""
