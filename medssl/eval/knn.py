"""The cosine kNN classifier of the evaluation harness: :mod:`medssl.knn` (shared with the trainer's online probe)."""

from ..knn import KNNClassifier, knn_accuracy, knn_predict, knn_regress, knn_scores

__all__ = ["KNNClassifier", "knn_accuracy", "knn_predict", "knn_regress", "knn_scores"]
