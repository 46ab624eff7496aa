"""Evaluation: detection metrics, baselines and the diagnosis plot."""
