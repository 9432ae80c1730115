"""Checks at the command-line boundary: options, output folders, devices.

The library names a bad argument in its message (``ValueError("photons:
must be positive ...")``, the habit of MONAI's ``test_ill_arg``);
:func:`option_errors` turns exactly those messages, for the arguments a
command passes from its options, into a :class:`ConfigError` that names the
option, so the CLI prints one line and exits with status 2. Any other
``ValueError`` is left alone: an internal error keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from ..errors import ConfigError, MedsslError


class option_errors:
    """Map ``ValueError("<arg>: problem")`` for each ``arg=option`` given to ``ConfigError(option, problem)``.

    ``with option_errors(photons="--photons"): noisy_line_integral(raw, photons, rng)``; one
    instance may guard several blocks.
    """

    def __init__(self, **names: str):
        self.names = names

    def __enter__(self) -> "option_errors":
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None or isinstance(exc, MedsslError) or not isinstance(exc, ValueError):
            return False
        arg, sep, problem = str(exc).partition(": ")
        if sep and arg in self.names:
            raise ConfigError(self.names[arg], problem) from None
        return False


def check_output_dir(option: str, folder: Union[str, Path]) -> Path:
    """``folder`` as a Path; a :class:`ConfigError` when it (or a parent) exists as a file."""
    folder = Path(folder)
    for p in (folder, *folder.parents):
        if p.exists():
            if not p.is_dir():
                where = f"{folder} is a file" if p == folder else f"{p} (in {folder}) is a file"
                raise ConfigError(option, f"{where}; give a folder")
            break
    return folder


def check_device(option: str, device: Optional[str]) -> None:
    """A torch device string that exists here (``cpu``, ``cuda``, ``cuda:1``, ``mps``), else :class:`ConfigError`."""
    import torch

    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(option, f"not a device: {device!r} (e.g. cpu, cuda, cuda:1)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(option, f"{device!r}: no CUDA device is available on this machine; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(option, f"{device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ConfigError(option, f"{device!r}: no MPS device is available on this machine; use cpu")
    elif dev.type != "cpu":
        raise ConfigError(option, f"{device!r}: medssl runs on cpu, cuda or mps")


def check_accelerator(accelerator: str, devices) -> None:
    """``trainer.accelerator`` / ``trainer.devices`` that this machine has, else :class:`ConfigError`."""
    import torch

    if accelerator in ("cuda", "gpu"):
        if not torch.cuda.is_available():
            raise ConfigError("trainer.accelerator", f"'{accelerator}': no CUDA device is available on this "
                              "machine; use trainer.accelerator=cpu (or auto)")
        if isinstance(devices, int) and devices > torch.cuda.device_count():
            raise ConfigError("trainer.devices", f"{devices} GPUs requested, {torch.cuda.device_count()} here")
    elif accelerator == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError("trainer.accelerator", "'mps': no MPS device is available on this machine")


__all__ = ["option_errors", "check_output_dir", "check_device", "check_accelerator"]
