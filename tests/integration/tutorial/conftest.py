"""The teaching programs (``examples/``), each run from a copy of its folder with
the chapter's own commands (``uvicorn main:app --reload``, ``celery -A tasks
worker``): the venv's ``uvicorn`` and ``celery``, on a free port; every process
stopped by process group in teardown."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.ports import free_port
from harness.procs import REPO_ROOT, Proc, wait_http

BIN = Path(sys.executable).parent


@dataclass
class RunningExample:
    folder: Path
    env: dict[str, str]
    procs: list[Proc] = field(default_factory=list)

    def run(self, name: str, *argv: str, env: dict[str, str] | None = None) -> Proc:
        """``argv`` in the example's folder; its output in ``<name>.out`` beside it."""
        proc = Proc(name, list(argv), {**self.env, **(env or {})}, self.folder / f"{name}.out")
        proc.cwd = self.folder
        self.procs.append(proc)
        return proc.start()

    def uvicorn(self, env: dict[str, str] | None = None) -> str:
        """``uvicorn main:app --reload``, as the chapter runs it (on a free port); its URL."""
        port = free_port()
        proc = self.run("uvicorn", str(BIN / "uvicorn"), "main:app", "--reload",
                        "--port", str(port), env=env)  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/docs", 60, proc)
        return url

    def log_txt(self) -> str:
        """``cat log.txt``."""
        path = self.folder / "log.txt"
        return path.read_text(encoding="utf-8") if path.exists() else ""

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


Example = Callable[[str], RunningExample]


@pytest.fixture
def examples() -> Path:
    return REPO_ROOT / "examples"


@pytest.fixture
def run_example(examples: Path, tmp_path: Path) -> Iterator[Example]:
    running: list[RunningExample] = []

    def make(name: str) -> RunningExample:
        folder = tmp_path / name
        shutil.copytree(examples / name, folder, ignore=shutil.ignore_patterns("__pycache__"))
        env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"}
        example = RunningExample(folder, env)
        running.append(example)
        return example

    try:
        yield make
    finally:
        for example in running:
            example.stop()
