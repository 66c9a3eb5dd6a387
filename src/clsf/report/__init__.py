"""Plots and reports; framework-free (they read arrays, metrics.csv and final.json only)."""
