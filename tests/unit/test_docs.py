"""The docs: generated tables that match their data, links that resolve, a README
that stays the front door."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from experiments.__main__ import command_parser
from experiments.reporting import docs
from tests.unit.conftest import REPO

PAGES = [REPO / "README.md", REPO / "examples" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Its headings' anchors, and the ids a generated table gives its rows."""
    text = page.read_text()
    headings = {slug(m[1]) for m in re.finditer(r"^#+ (.+)$", text, re.M)}
    return headings | set(re.findall(r'<a id="([\w-]+)"></a>', text))


def test_the_committed_docs_match_their_data() -> None:
    parser, module = command_parser("docs")
    assert module.run(parser.parse_args(["--check"])) == 0, (
        "a generated table in docs/ differs from reports/*.json: python -m experiments docs"
    )


def test_every_generated_region_has_a_renderer_and_its_report() -> None:
    regions = [m["name"] for page in PAGES for m in docs.REGION.finditer(page.read_text())]
    assert set(regions) >= set(docs.RENDERERS) | set(docs.COMPOSITE)  # every report shown
    for name in regions:
        assert docs.known(name), name
        if name in docs.RENDERERS:
            assert (REPO / "reports" / f"{name}.json").is_file(), name


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_to_a_file_a_test_or_a_heading_resolves(page: Path) -> None:
    text = page.read_text()
    checked = 0
    for label, href in LINK.findall(text):
        if href.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = href.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name}: [{label}]({href}): no {target}"
        if anchor and target.suffix == ".md":
            assert anchor in anchors(target), f"{page.name}: no heading #{anchor} in {path}"
        test = re.fullmatch(r"`(test_\w+)`", label)
        if test and target.suffix == ".py":
            assert re.search(rf"^def {test[1]}\(", target.read_text(), re.M), (
                f"{page.name}: {test[1]} is not a test in {path}"
            )
        checked += 1
    assert checked or page.name != "README.md"


def test_the_readme_is_the_front_door() -> None:
    text = (REPO / "README.md").read_text()
    # Short enough to read at the door: the chapter's guide, the table across every
    # queue (a column each: the most of it), the walkthrough; the rest is in docs/.
    assert len(text.encode()) <= 16 * 1024
    first_screen = text.split("\n## ", 1)[0]
    [setup] = re.findall(r"```bash\n(.*?)```", first_screen, re.S)
    commands = [line.split("#")[0].strip() for line in setup.splitlines() if line.strip()]
    assert commands == ["docker compose up --build", "make test"]
    # ...and what each one needs, one line each.
    assert "`docker compose up --build` needs" in first_screen
    assert "`make test` needs" in first_screen


def test_a_generated_region_is_redrawn_from_its_report(tmp_path: Path) -> None:
    data = {
        "machine": {"when": "2026-12-01T00:00:00+00:00", "platform": "Linux", "cpus": 2},
        "target": "local",
        "params": {
            "tasks": 1,
            "delay": 2.0,
            "concurrency": 2,
            "visibility": 5.0,
            "restore_interval": 0.5,
        },
        "scenarios": [],
    }
    (tmp_path / "crash.json").write_text(json.dumps(data))
    text = "before\n<!-- generated: crash -->\nstale table\n<!-- /generated -->\nafter\n"
    new = docs.generate(text, tmp_path)
    assert new.startswith("before\n<!-- generated: crash -->\n*Measured 2026-12-01")
    assert "stale table" not in new and "| scenario |" in new and new.endswith("after\n")
    assert docs.generate(new, tmp_path) == new  # stable
    with pytest.raises(KeyError, match="nothing"):
        docs.generate("<!-- generated: nothing -->\n<!-- /generated -->", tmp_path)
