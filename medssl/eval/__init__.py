"""Evaluation harness: frozen-feature probes, fine-tuning, survival, retrieval, label efficiency.

Importing this package registers the evaluation tasks in :data:`medssl.registry.TASKS`.
"""

from . import knn  # noqa: F401
