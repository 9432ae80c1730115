from medssl.cli.main import main
from medssl.errors import ConfigError
from medssl.registry import Registry

import pytest


def test_help_lists_subcommands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "list" in out


def test_unknown_command_exits_2(capsys):
    assert main(["no-such-command"]) == 2


def test_registry_names_unknown_argument():
    reg = Registry("thing")

    @reg.register("a")
    def make_a(width: int = 3):
        return width

    assert reg.build("a", width=5) == 5
    with pytest.raises(ConfigError, match="thing.a.depth"):
        reg.build("a", depth=2)
    with pytest.raises(ConfigError, match="unknown thing 'b'"):
        reg.get("b")
