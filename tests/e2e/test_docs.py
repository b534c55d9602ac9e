"""The docs stay true to the CLI: every flag `sidecar --help` lists is in the README's table."""
from __future__ import annotations

from sidecar.cli import build_parser
from tests.server import ROOT


def test_every_flag_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    flags = [option for action in build_parser()._actions for option in action.option_strings
             if option.startswith("--") and option != "--help"]
    assert len(flags) > 40
    missing = [flag for flag in flags if f"`{flag}" not in readme]
    assert not missing, f"flags missing from README.md: {missing}"
