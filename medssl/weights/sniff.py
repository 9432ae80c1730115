"""What a checkpoint file is, found without unpickling it.

When ``torch.load(weights_only=True)`` refuses a file, the reason matters:
a file that is merely broken (an HTML error page saved as ``.pth``, a
truncated download, a file that is not a checkpoint at all) must never be
answered with "pass --trust", which would run code from it. :func:`sniff`
reads the container (zip archive or legacy stream) and walks the pickle
opcodes with :func:`pickletools.genops`, which parses a pickle without
executing any of it, and reports:

- ``problem``: why the file is not a readable checkpoint, or ``None``;
- ``globals``: the ``module.name`` objects the pickle would import;
- ``needs_unpickling``: the file is a well-formed torch checkpoint whose
  pickle references globals outside torch's ``weights_only`` allowlist,
  the one case where full unpickling (``--trust``) is what it takes.
"""

from __future__ import annotations

import pickletools
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable, List, Optional, Set

#: The first pickle of a legacy (pre-1.6) ``torch.save`` stream holds this number.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
#: Pickles in a legacy stream: magic number, protocol version, sys info, the object, storage keys.
LEGACY_PICKLES = 5
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING",
               "STRING"}
_STORAGE = re.compile(r"^torch\.(cuda\.)?\w*Storage$")


@dataclass
class Sniffed:
    """What :func:`sniff` found."""

    kind: str  # "zip" | "legacy" | "pickle" | "empty" | "html" | "text" | "other"
    problem: Optional[str] = None
    globals: List[str] = field(default_factory=list)
    disallowed: List[str] = field(default_factory=list)

    @property
    def needs_unpickling(self) -> bool:
        return self.problem is None and bool(self.disallowed)


def _pickle_globals(stream: BinaryIO) -> List[str]:
    """The globals one pickle references; raises ``ValueError`` when it is not a complete pickle."""
    found: List[str] = []
    pushed: List[Optional[str]] = []  # recent pushes, enough to name STACK_GLOBAL's two strings
    memo: dict = {}
    saw_stop = False
    for op, arg, _ in pickletools.genops(stream):
        name = op.name
        if name in ("GLOBAL", "INST"):
            found.append(str(arg).replace(" ", ".", 1))
            pushed.append(None)
        elif name == "STACK_GLOBAL":
            mod, attr = (pushed[-2:] + [None, None])[:2] if len(pushed) >= 2 else (None, None)
            found.append(f"{mod}.{attr}" if mod and attr else "<unnamed global>")
            pushed.append(None)
        elif name in _STRING_OPS:
            pushed.append(arg if isinstance(arg, str) else None)
        elif name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = pushed[-1] if pushed else None
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(arg))
        elif name == "STOP":
            saw_stop = True
        elif name not in ("PROTO", "FRAME", "MARK"):
            pushed.append(None)
        del pushed[:-8]
    if not saw_stop:  # genops stops at STOP and raises on a truncated stream; a guard all the same
        raise ValueError("pickle ended before its STOP opcode")
    return found


def _allowed(extra: Iterable[str] = ()) -> Set[str]:
    """``module.name`` of every global torch's ``weights_only`` unpickler accepts now."""
    names = set(extra)
    try:
        from torch import _weights_only_unpickler as wou

        names |= set(wou._get_allowed_globals())
        names |= set(wou._get_user_allowed_globals())
    except Exception:  # a torch without these helpers: only the explicit ones
        pass
    return names


def _disallowed(globs: Iterable[str], extra: Iterable[str]) -> List[str]:
    allowed = _allowed(extra)
    out = []
    for g in globs:
        if g not in allowed and not _STORAGE.match(g) and g not in out:
            out.append(g)
    return out


def _text_kind(head: bytes) -> Optional[str]:
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if start.startswith(b"<"):  # <!DOCTYPE html>, <html>, <?xml ...>
        return "html"
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head)
    return "text" if head and printable / len(head) > 0.95 else None


def sniff(path: Path, allowed_extra: Iterable[str] = ()) -> Sniffed:
    """Classify ``path`` (never unpickling it); ``allowed_extra``: globals the caller allows as well."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return Sniffed("empty", "the file is empty (an interrupted download?)")
    with open(path, "rb") as fh:
        head = fh.read(512)
    extra = list(allowed_extra)
    if head.startswith(b"PK"):
        return _sniff_zip(path, extra)
    if head[:1] == b"\x80":  # a pickle's PROTO opcode: a legacy torch.save stream, or a plain pickle
        return _sniff_stream(path, extra)
    kind = _text_kind(head)
    if kind == "html":
        return Sniffed(kind, "the file is an HTML/XML page, not a checkpoint (a download that returned an error "
                       "page or a login form?)")
    if kind == "text":
        return Sniffed(kind, "the file is text, not a checkpoint")
    return Sniffed("other", "the file is neither a zip archive nor a pickle, so not a PyTorch checkpoint "
                   "(written by torch.save)")


def _sniff_zip(path: Path, extra: List[str]) -> Sniffed:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            pkl = sorted((n for n in names if n == "data.pkl" or n.endswith("/data.pkl")), key=len)
            if not pkl:
                return Sniffed("zip", "the file is a zip archive without data.pkl, so not a PyTorch checkpoint")
            with zf.open(pkl[0]) as stream:
                globs = _pickle_globals(stream)
    except zipfile.BadZipFile as exc:
        return Sniffed("zip", f"the zip archive is truncated or damaged ({exc}); download it again")
    except (ValueError, EOFError, OSError) as exc:
        return Sniffed("zip", f"the checkpoint's pickle (data.pkl) is truncated or damaged ({exc})")
    return Sniffed("zip", None, globs, _disallowed(globs, extra))


def _sniff_stream(path: Path, extra: List[str]) -> Sniffed:
    globs: List[str] = []
    with open(path, "rb") as fh:
        try:
            first = list(pickletools.genops(fh))
        except (ValueError, EOFError) as exc:
            return Sniffed("pickle", f"the pickle is truncated or damaged ({exc})")
        magic = [arg for op, arg, _ in first if op.name in ("LONG1", "LONG4", "LONG", "INT")]
        if magic != [LEGACY_MAGIC]:
            return Sniffed("pickle", "the file is a plain pickle that torch.save did not write, "
                           "so not a PyTorch checkpoint")
        for n in range(1, LEGACY_PICKLES):
            try:
                globs += _pickle_globals(fh)
            except (ValueError, EOFError) as exc:
                return Sniffed("legacy", f"the checkpoint is truncated or damaged (pickle {n + 1} of the "
                               f"legacy format: {exc})")
    return Sniffed("legacy", None, globs, _disallowed(globs, extra))


__all__ = ["Sniffed", "sniff", "LEGACY_MAGIC"]
