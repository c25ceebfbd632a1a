"""Orchestration: the CLI, Ray Tune studies, MLflow tracking and the final test evaluation.

``study`` imports ``wsol``; ``wsol`` never imports ``study``, Ray, Optuna or MLflow.
"""
