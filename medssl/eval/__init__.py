"""Evaluation harness: frozen-feature probes, fine-tuning, survival, retrieval, label efficiency.

Importing this package registers the evaluation tasks in :data:`medssl.registry.TASKS`
(``classification``, ``regression``, ``survival``, ``segmentation``,
``retrieval``, ``label_efficiency``). :func:`compare` evaluates several
checkpoints and the random-initialisation baseline into one table.
"""

from . import knn  # noqa: F401
from . import classification, features, linear_probe, metrics, regression, retrieval, segmentation, splits, survival  # noqa: F401
from . import tables, tasks  # noqa: F401  (tasks registers the TASKS entries)
from .compare import compare, evaluate_models
from .tasks import EvalSettings

__all__ = ["compare", "evaluate_models", "EvalSettings"]
