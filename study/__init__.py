"""Orchestration: the CLI, and (later) Ray Tune studies, MLflow logging and evaluation.

``study`` imports ``wsol``; ``wsol`` never imports ``study``.
"""
