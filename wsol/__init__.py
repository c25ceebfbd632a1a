"""wsol: Learning a Weight Map for Weakly-Supervised Localization (Method I and II).

Pure PyTorch + OpenCV. Knows nothing of Ray, Optuna or MLflow (those live in ``study``).
"""

__version__ = "0.1.0"
