"""The dpedu command's own options: --version, and --help in plain text."""

import subprocess
import sys
from importlib.metadata import version

from dpedu import cli


def _run(*args):
    return subprocess.run([sys.executable, "-m", "dpedu", *args], capture_output=True, text=True, timeout=120)


def test_version_prints_the_installed_version():
    done = _run("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"dpedu {version('dpedu')}"


def test_help_is_plain_text_and_lists_every_command():
    done = _run("--help")
    assert done.returncode == 0
    assert "``" not in done.stdout and ":func:" not in done.stdout  # no reST markup
    for command in cli.build_parser()._subparsers._group_actions[0].choices:
        assert command in done.stdout
    assert "examples:" in done.stdout
