"""import-weights tells a broken file from one that needs unpickling; --trust is named only for the latter."""

import pickle
import zipfile

import pytest
import torch

from medssl.cli.main import main
from medssl.errors import DataError
from medssl.weights import load_released_state_dict
from medssl.weights.sniff import sniff


class _Payload:
    def __init__(self):
        self.x = 1


class _Marker:
    """Unpickling it creates a file: shows whether code from the checkpoint ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _good(path, legacy=False):
    torch.save({"state_dict": {"w": torch.arange(6.0)}}, path, _use_new_zipfile_serialization=not legacy)
    return path


def _broken(tmp_path, kind):
    p = tmp_path / f"{kind}.pth"
    if kind == "html":
        p.write_text("<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>gone</body></html>\n")
    elif kind == "text":
        p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 1234\n")
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "random":
        p.write_bytes(bytes(range(7, 256)) * 4)
    elif kind == "truncated_zip":
        data = _good(tmp_path / "full.pth").read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif kind == "truncated_legacy":
        data = _good(tmp_path / "full.pth", legacy=True).read_bytes()
        p.write_bytes(data[:300])
    elif kind == "zip_without_pickle":
        with zipfile.ZipFile(p, "w") as zf:
            zf.writestr("archive/readme.txt", "not a checkpoint")
    elif kind == "damaged_pickle_in_zip":
        with zipfile.ZipFile(p, "w") as zf:
            zf.writestr("archive/data.pkl", pickle.dumps({"w": [1, 2, 3]}, protocol=2)[:-6])
    elif kind == "plain_pickle":
        p.write_bytes(pickle.dumps({"w": _Payload()}))
    return p


BROKEN = ["html", "text", "empty", "random", "truncated_zip", "truncated_legacy", "zip_without_pickle",
          "damaged_pickle_in_zip", "plain_pickle"]


@pytest.mark.parametrize("kind", BROKEN)
def test_broken_files_are_called_broken_without_suggesting_trust(tmp_path, kind):
    path = _broken(tmp_path, kind)
    assert sniff(path).problem is not None and not sniff(path).needs_unpickling
    with pytest.raises(DataError) as info:
        load_released_state_dict(path)
    msg = str(info.value)
    assert str(path) in msg and "not a readable checkpoint" in msg
    assert "trust" not in msg.lower() and "unpickling" not in msg


@pytest.mark.parametrize("legacy", [False, True])
def test_a_checkpoint_with_other_globals_needs_trust(tmp_path, legacy):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": _Payload()}, path,
               _use_new_zipfile_serialization=not legacy)
    found = sniff(path)
    assert found.needs_unpickling and found.disallowed == [f"{__name__}._Payload"]
    with pytest.raises(DataError, match=r"needs full unpickling.*_Payload.*trust"):
        load_released_state_dict(path)
    assert set(load_released_state_dict(path, trust=True)) == {"w"}


@pytest.mark.parametrize("legacy", [False, True])
def test_good_checkpoints_sniff_clean(tmp_path, legacy):
    path = _good(tmp_path / "ok.pth", legacy=legacy)
    found = sniff(path)
    assert found.problem is None and not found.needs_unpickling and "collections.OrderedDict" in found.globals
    assert set(load_released_state_dict(path)) == {"w"}


def test_trust_never_unpickles_a_truncated_file(tmp_path):
    marker = tmp_path / "code_ran"
    full = tmp_path / "full.pth"
    torch.save({"first": _Marker(marker), "state_dict": {"w": torch.zeros(1000)}}, full,
               _use_new_zipfile_serialization=False)
    data = full.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: data.index(b"state_dict") + 4])  # the payload is complete, the pickle is not
    with pytest.raises(DataError, match="truncated or damaged"):
        load_released_state_dict(cut, trust=True)
    assert not marker.exists()
    html = _broken(tmp_path, "html")
    with pytest.raises(DataError, match="HTML"):
        load_released_state_dict(html, trust=True)


def test_cli_names_the_problem_and_mentions_trust_only_when_it_helps(tmp_path, capsys):
    out = tmp_path / "o.safetensors"
    for kind in ("html", "truncated_zip"):
        src = _broken(tmp_path, kind)
        assert main(["import-weights", str(src), "--arch", "mit_tiny", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert str(src) in err and "--trust" not in err and "Traceback" not in err
    assert not out.exists()
