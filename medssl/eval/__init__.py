"""Evaluation harness: frozen-feature probes, fine-tuning, survival, retrieval, label efficiency.

Importing this package registers the generic evaluation tasks in :data:`medssl.registry.TASKS`
(``classification``, ``regression``, ``survival``, ``segmentation``,
``label_efficiency``); a method family's own tasks register from its
``medssl/methods/<family>_eval.py``, which the registry lists.
:func:`compare` evaluates several checkpoints and the random-initialisation
baseline into one table.
"""

from . import knn  # noqa: F401
from . import classification, features, linear_probe, metrics, regression, retrieval, segmentation, splits, survival  # noqa: F401
from . import tables, tasks  # noqa: F401  (tasks registers the TASKS entries)
from .compare import compare, evaluate_models
from .tasks import EvalSettings

__all__ = ["compare", "evaluate_models", "EvalSettings"]
