"""Key mappers from the released UniMiSS / UniMiSS+ state dicts onto medssl's MiT / MiT+.

The released models (github.com/YtongXie/UniMiSS-code) name modules after the
dimensionality (``patch_embed2D1``, ``attn.sr3D``, ``DecEmbed3D0`` ...) and keep
the encoder under ``transformer.``. Ours keep one :class:`~medssl.backbones.
mit_layers.TokenStage` per stage with per-path ``ModuleDict`` entries
(``encoder.stages.0.embed.2d``). The same mapping imports the authors'
published checkpoints and the deterministic reference weights of the parity
tests.

A mapper takes a released key (prefixes already stripped) and returns our key,
``None`` for a key to drop on purpose (the DINO head), or raises ``KeyError``.
"""

from __future__ import annotations

import re
from typing import Callable, List, Optional, Tuple

from .registry import register_key_mapper

Rule = Tuple["re.Pattern[str]", Callable[["re.Match[str]"], str]]


def _p(m: "re.Match[str]") -> str:
    """The path key ``2d`` / ``3d`` from a released ``2D`` / ``3D`` group."""
    return m.group("p").lower()


def _block_rest(rest: str) -> str:
    return rest.replace("attn.sr2D.", "attn.sr.2d.").replace("attn.sr3D.", "attn.sr.3d.")


def _rules_common() -> List[Rule]:
    """Encoder stages, positional embeddings, cls tokens, blocks (MiT and MiT+ alike)."""
    return [
        (re.compile(r"^transformer\.pos_embed(?P<p>[23]D)(?P<i>[1-4])$"),
         lambda m: f"encoder.stages.{int(m['i']) - 1}.pos.{_p(m)}.weight"),
        (re.compile(r"^transformer\.cls_tokens1$"), lambda m: "encoder.cls_token"),
        (re.compile(r"^transformer\.cls_tokens(?P<i>[2-4])\.(?P<r>weight|bias)$"),
         lambda m: f"encoder.stages.{int(m['i']) - 1}.cls_proj.{m['r']}"),
        (re.compile(r"^transformer\.block(?P<i>[1-4])\.(?P<j>\d+)\.(?P<r>.+)$"),
         lambda m: f"encoder.stages.{int(m['i']) - 1}.blocks.{m['j']}.{_block_rest(m['r'])}"),
        (re.compile(r"^head\."), lambda m: ""),  # the DINO head is not part of the backbone
    ]


MIT_RULES: List[Rule] = _rules_common() + [
    (re.compile(r"^transformer\.patch_embed(?P<p>[23]D)0\.(?P<r>(conv|norm)\..+)$"),
     lambda m: f"encoder.stem.{_p(m)}.{m['r']}"),
    (re.compile(r"^transformer\.patch_embed(?P<p>[23]D)(?P<i>[1-4])\.proj\.(?P<r>(conv|norm)\..+)$"),
     lambda m: f"encoder.stages.{int(m['i']) - 1}.embed.{_p(m)}.{m['r']}"),
    (re.compile(r"^DecPosEmbed(?P<p>[23]D)(?P<i>[0-2])$"), lambda m: f"decoder.stages.{m['i']}.pos.{_p(m)}.weight"),
    (re.compile(r"^DecEmbed(?P<p>[23]D)(?P<i>[0-2])\.proj\.(?P<r>weight|bias)$"),
     lambda m: f"decoder.stages.{m['i']}.embed.{_p(m)}.{m['r']}"),
    (re.compile(r"^Decblock(?P<i>[0-2])\.(?P<j>\d+)\.(?P<r>.+)$"),
     lambda m: f"decoder.stages.{m['i']}.blocks.{m['j']}.{_block_rest(m['r'])}"),
    (re.compile(r"^cls_tokens(?P<i>[0-2])\.(?P<r>weight|bias)$"), lambda m: f"decoder.stages.{m['i']}.cls_proj.{m['r']}"),
    (re.compile(r"^norm\.(?P<r>weight|bias)$"), lambda m: f"decoder.norm.{m['r']}"),
]

MIT_PLUS_RULES: List[Rule] = _rules_common() + [
    (re.compile(r"^transformer\.ConvBlock(?P<p>[23]D)0\.0\.(?P<r>(conv|norm)\..+)$"),
     lambda m: f"encoder.conv0.{_p(m)}.{m['r']}"),
    (re.compile(r"^transformer\.ConvBlock(?P<p>[23]D)1\.(?P<k>[01])\.(?P<r>(conv|norm)\..+)$"),
     lambda m: f"encoder.conv1.{_p(m)}.{m['k']}.{m['r']}"),
    (re.compile(r"^transformer\.patch_embed(?P<p>[23]D)(?P<i>[1-4])\.(?P<proj>proj1?)\.(?P<r>(conv|norm)\..+)$"),
     lambda m: f"encoder.stages.{int(m['i']) - 1}.embed.{_p(m)}.{1 if m['proj'] == 'proj1' else 0}.{m['r']}"),
    (re.compile(r"^DecPosEmbed(?P<p>[23]D)(?P<i>[1-3])$"),
     lambda m: f"decoder.stages.{int(m['i']) - 1}.pos.{_p(m)}.weight"),
    (re.compile(r"^DecEmbed(?P<p>[23]D)(?P<i>[1-3])\.proj\.(?P<r>weight|bias)$"),
     lambda m: f"decoder.stages.{int(m['i']) - 1}.embed.{_p(m)}.0.{m['r']}"),
    (re.compile(r"^DecEmbed(?P<p>[23]D)(?P<i>[1-3])\.proj1\.(?P<r>(conv|norm)\..+)$"),
     lambda m: f"decoder.stages.{int(m['i']) - 1}.embed.{_p(m)}.1.{m['r']}"),
    (re.compile(r"^Decblock(?P<i>[1-3])\.(?P<j>\d+)\.(?P<r>.+)$"),
     lambda m: f"decoder.stages.{int(m['i']) - 1}.blocks.{m['j']}.{_block_rest(m['r'])}"),
    (re.compile(r"^TransposeConv(?P<p>[23]D)1\.(?P<r>weight|bias)$"), lambda m: f"decoder.up1.{_p(m)}.{m['r']}"),
    (re.compile(r"^DeConvBlock(?P<p>[23]D)1\.(?P<r>(conv|norm)\..+)$"), lambda m: f"decoder.conv1.{_p(m)}.{m['r']}"),
    (re.compile(r"^TransposeConv(?P<p>[23]D)2\.(?P<r>weight|bias)$"), lambda m: f"decoder.up2.{_p(m)}.{m['r']}"),
    (re.compile(r"^recon_conv(?P<p>[23]D)\.(?P<r>weight|bias)$"), lambda m: f"decoder.head.{_p(m)}.{m['r']}"),
    (re.compile(r"^norm\.(?P<r>weight|bias)$"), lambda m: f"decoder.norm.{m['r']}"),
]


def _apply(rules: List[Rule], key: str) -> Optional[str]:
    for pattern, fn in rules:
        m = pattern.match(key)
        if m:
            out = fn(m)
            return out or None
    raise KeyError(key)


@register_key_mapper("mit_tiny")
@register_key_mapper("mit_small")
def map_mit_key(key: str) -> Optional[str]:
    """Released UniMiSS MiT key -> medssl ``MiT`` key (``None``: drop)."""
    return _apply(MIT_RULES, key)


@register_key_mapper("mit_plus")
def map_mit_plus_key(key: str) -> Optional[str]:
    """Released UniMiSS+ MiT+ key -> medssl ``MiTPlus`` key (``None``: drop)."""
    return _apply(MIT_PLUS_RULES, key)


def released_kwargs(sd: dict) -> dict:
    """Backbone kwargs that fit a released UniMiSS/UniMiSS+ state dict (keys already stripped).

    The built paths follow the ``2D``/``3D`` keys present, the decoder is built
    when decoder keys exist, and the stored positional-embedding sizes give
    the image sizes (2D square; 3D with depth 16, the pretraining depth).
    """
    keys = [k for k in sd if not k.startswith("head.")]
    paths = [d for d in (2, 3) if any(f"{d}D" in k for k in keys)] or [2, 3]
    kw: dict = {"spatial_dims": 3 if 3 in paths else 2, "paths": paths,
                "with_decoder": any(not k.startswith("transformer.") for k in keys)}
    if "transformer.pos_embed2D1" in sd:
        n = sd["transformer.pos_embed2D1"].shape[1] - 1  # (S/4)^2 tokens after stem/conv1 and stage 1
        kw["img_size_2d"] = 4 * round(n ** 0.5)
    if "transformer.pos_embed3D1" in sd:
        n = sd["transformer.pos_embed3D1"].shape[1] - 1  # (16/2) x (S/4)^2 tokens
        kw["img_size_3d"] = [16, 4 * round((n / 8) ** 0.5), 4 * round((n / 8) ** 0.5)]
    return kw
