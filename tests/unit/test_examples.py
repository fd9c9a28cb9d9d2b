"""The chapter's programs (``examples/``) stay the chapter's size: small enough to
read at once, as the README promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.conftest import REPO

PROGRAMS = sorted((REPO / "examples").glob("*/*.py"))


def test_there_are_the_chapters_three_programs() -> None:
    assert {p.parent.name for p in PROGRAMS} == {"chapter19", "chapter19_celery", "threadpool"}


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_each_program_is_under_50_lines(program: Path) -> None:
    assert len(program.read_text(encoding="utf-8").splitlines()) < 50
