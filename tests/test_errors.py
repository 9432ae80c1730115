"""medssl's errors survive a pickle round trip (preprocessing workers send them to the parent)."""

import importlib
import inspect
import pickle
import re
from pathlib import Path

import pytest

import medssl
from medssl.errors import ConfigError, DataError, MedsslError


CLASS_LINE = re.compile(r"^class \w+\([^)]*Error[^)]*\)", re.M)


def _all_error_classes():
    """MedsslError and every subclass, from the modules that define an error class (found by a text scan,
    which is faster than importing the whole package)."""
    root = Path(medssl.__file__).parent
    for path in sorted(root.rglob("*.py")):
        if CLASS_LINE.search(path.read_text(encoding="utf-8")):
            name = ".".join(("medssl",) + path.relative_to(root).with_suffix("").parts)
            importlib.import_module(name)
    seen, todo = [], [MedsslError]
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen.append(cls)
            todo.extend(cls.__subclasses__())
    return seen


def _example(cls):
    """An instance built through the class's own signature (strings for every parameter)."""
    params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
    if any(p.kind is p.VAR_POSITIONAL for p in params) or not params:
        return cls("something went wrong")
    kwargs = {p.name: f"value of {p.name}" for p in params
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty}
    return cls(**kwargs)


CLASSES = _all_error_classes()


def test_the_known_classes_are_found():
    names = {c.__name__ for c in CLASSES}
    assert {"MedsslError", "DataError", "ConfigError", "CheckpointError", "DivergedError"} <= names


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_pickle_round_trip(cls):
    exc = _example(cls)
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls
    assert str(back) == str(exc) and back.args == exc.args
    assert {k: v for k, v in vars(back).items()} == {k: v for k, v in vars(exc).items()}


def test_attributes_and_positional_and_keyword_forms():
    for exc in (DataError("/data/a.nii.gz", "is 2D"), DataError(path="/data/a.nii.gz", problem="is 2D"),
                DataError(None, "no file")):
        back = pickle.loads(pickle.dumps(exc))
        assert back.path == exc.path and back.problem == exc.problem and str(back) == str(exc)
    back = pickle.loads(pickle.dumps(ConfigError("optim.lr", "must be > 0")))
    assert back.key == "optim.lr" and "optim.lr" in str(back)
