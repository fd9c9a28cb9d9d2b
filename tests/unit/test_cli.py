"""``python -m experiments``: every command's parser, and the laziness of ``--help``."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from experiments.__main__ import COMMANDS, command_parser
from experiments.common import implementations_from, urls_from
from shared.services import IMPLEMENTATIONS
from tests.unit.conftest import REPO


def test_every_command_builds_its_parser() -> None:
    for name in COMMANDS:
        parser, module = command_parser(name)
        assert callable(module.run), name
        assert parser.prog.endswith(name)


def test_help_imports_no_command_and_no_matplotlib() -> None:
    code = (
        "import sys\n"
        "from experiments.__main__ import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith(('matplotlib', 'experiments.'))\n"
        "             and m != 'experiments.__main__'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "crash" in done.stdout and "footprint" in done.stdout  # listed...
    assert done.stdout.strip().splitlines()[-1] == "[]"  # ...but not imported


def test_a_service_url_is_given_as_service_equals_url_and_a_bad_one_is_refused() -> None:
    assert urls_from(["taskiq-api=http://h:1", "flower=http://h:2"]) == {
        "taskiq-api": "http://h:1",
        "flower": "http://h:2",
    }
    for bad in ("bg-api", "redis=http://h:1", "bg-api=h:1"):
        with pytest.raises(SystemExit, match="SERVICE=http"):
            urls_from([bad])
    assert implementations_from("taskiq, bg,taskiq") == ("taskiq", "bg")
    declared = ", ".join(IMPLEMENTATIONS)
    with pytest.raises(argparse.ArgumentTypeError, match=f"declared are {declared}"):
        implementations_from("bg,nosuch")
