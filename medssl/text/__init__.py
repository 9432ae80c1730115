"""Report text for text-informed pretraining (T3D): sections, sentences, a text encoder, an embedding cache."""

from .cache import EmbeddingCache, text_key
from .encoder import DEFAULT_ENCODER, TextEncoder, default_model_path, mean_pool
from .sections import Report, language_check, parse_report, split_sections, split_sentences

__all__ = [
    "EmbeddingCache", "text_key", "DEFAULT_ENCODER", "TextEncoder", "default_model_path", "mean_pool",
    "Report", "language_check", "parse_report", "split_sections", "split_sentences",
]
