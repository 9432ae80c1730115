"""Imports flow down the data flow (DESIGN.md): a layer never imports a layer downstream of it.

Every ``import`` / ``from ... import`` in medssl's source, at module level or
inside a function, is read with ``ast`` and resolved to a ``medssl.<package>``
name; the table lists, for each package, the packages it must not import.

A method family's evaluation module, ``medssl/methods/<family>_eval.py``, is
the one place that imports both methods and eval (its tasks and adapter use
the harness); the evaluation reaches it only by name, through the module
lists of ``medssl/registry.py``, so ``eval`` never imports ``methods``.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1] / "medssl"

#: package -> packages downstream of it, which it must not import
FORBIDDEN: Dict[str, Tuple[str, ...]] = {
    "train": ("eval",),
    "drr": ("synth", "eval", "train", "methods"),
    "io": ("synth", "drr", "views", "backbones", "heads", "losses", "methods", "train", "eval"),
    "synth": ("eval", "train", "methods"),
    "data": ("views", "backbones", "heads", "losses", "methods", "train", "eval"),
    "backbones": ("methods", "train", "eval"),
    "heads": ("methods", "train", "eval"),
    "losses": ("methods", "train", "eval"),
    "views": ("methods", "train", "eval"),
    "methods": ("train", "eval"),
    "eval": ("methods",),
}

#: files exempt from a rule: ``(layer, forbidden layer) -> glob`` under the layer's folder
EXEMPT: Dict[Tuple[str, str], str] = {
    ("methods", "eval"): "*_eval.py",
}


def _module_name(path: Path, root: Path) -> List[str]:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def imported_modules(path: Path, root: Path = ROOT) -> Iterator[Tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``path`` (a file under ``root``, the medssl folder)."""
    here = _module_name(path, root)
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            yield node.lineno, mod
            for alias in node.names:  # ``from .. import eval`` imports the package eval
                yield node.lineno, f"{mod}.{alias.name}"


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "medssl" else ""


def test_the_resolver_reads_relative_and_nested_imports(tmp_path):
    pkg = tmp_path / "medssl" / "train"
    pkg.mkdir(parents=True)
    src = pkg / "x.py"
    src.write_text("from ..knn import a\ndef f():\n    from ..eval import knn\n    import medssl.drr.render\n")
    mods = {m for _, m in imported_modules(src, tmp_path / "medssl")}
    assert {"medssl.knn", "medssl.eval", "medssl.eval.knn", "medssl.drr.render"} <= mods
    assert _layer("medssl.eval.knn") == "eval" and _layer("torch.nn") == ""


def _exempt(path: Path, layer: str, target: str) -> bool:
    pattern = EXEMPT.get((layer, target))
    return pattern is not None and path.match(pattern) and path.parent == ROOT / layer


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_nothing_downstream(layer):
    bad = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        for line, mod in imported_modules(path):
            target = _layer(mod)
            if target in FORBIDDEN[layer] and not _exempt(path, layer, target):
                bad.append(f"{path.relative_to(ROOT.parent)}:{line} imports {mod}")
    assert not bad, "imports against the data flow:\n" + "\n".join(bad)


def _eval_modules() -> List[str]:
    return sorted(f"medssl.methods.{p.stem}" for p in (ROOT / "methods").glob("*_eval.py"))


def test_only_the_registry_reaches_a_method_evaluation_module():
    """A method's ``*_eval`` module is imported by no other module of medssl (pretraining never pulls in eval)."""
    evals = set(_eval_modules())
    assert evals
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        for line, mod in imported_modules(path):
            if any(mod == e or mod.startswith(e + ".") for e in evals):
                bad.append(f"{path.relative_to(ROOT.parent)}:{line} imports {mod}")
    assert not bad, "a method evaluation module is imported directly:\n" + "\n".join(bad)


def test_the_registry_lists_every_method_evaluation_module():
    from medssl.registry import EVAL_ADAPTERS, TASKS

    listed = set(TASKS._modules) | set(EVAL_ADAPTERS._modules)
    assert set(_eval_modules()) <= listed
