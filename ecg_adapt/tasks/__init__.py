"""Tasks (labels, loss, metrics) and the metrics themselves."""

from .challenge import ChallengeTask, challenge_score, challenge_score_from_probabilities, load_weights
from .metrics import multilabel_metrics, single_label_metrics, tune_thresholds
from .staging import staging_metrics
from .task import ClassificationTask

__all__ = [
    "ChallengeTask",
    "challenge_score",
    "challenge_score_from_probabilities",
    "load_weights",
    "ClassificationTask", "multilabel_metrics", "single_label_metrics", "staging_metrics", "tune_thresholds"]
