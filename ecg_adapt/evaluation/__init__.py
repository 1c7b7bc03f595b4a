"""Evaluation across runs: saved test predictions, comparisons with paired bootstrap differences and tied
ranks, and plots. Sits above training (it reads finished runs) and below the CLI."""

from .compare import Comparison, RunResult, compare_runs, metric_value, plot_curves
from .predictions import PREDICTIONS_DIR, Predictions, load_predictions, save_predictions

__all__ = [
    "PREDICTIONS_DIR",
    "Comparison",
    "Predictions",
    "RunResult",
    "compare_runs",
    "load_predictions",
    "metric_value",
    "plot_curves",
    "save_predictions",
]
