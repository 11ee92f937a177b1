"""The repository explains itself: every "§N" in code, configs, README and docs names a
section of docs/protocol.md, every link to one of its anchors exists, nothing points to a file
outside the repository, and docs/architecture.md names every package."""

import pathlib
import re

from tests.conftest import REPO

ROOT = pathlib.Path(REPO)
PROTOCOL = ROOT / "docs" / "protocol.md"


def sources() -> list[pathlib.Path]:
    files = [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("configs/**/*.flags")]
    for folder in ("atom_tf", "bin", "bench", "tests"):
        files += sorted((ROOT / folder).rglob("*.py"))
    return files


def protocol_sections() -> set[str]:
    return set(re.findall(r"^## (\d+)\. ", PROTOCOL.read_text(), re.M))


def test_every_section_reference_names_a_section_of_the_protocol():
    sections = protocol_sections()
    assert sections == {str(n) for n in range(1, 13)}
    cited, missing = 0, []
    for path in sources():
        for number, line in references(path.read_text()):
            cited += 1
            if number not in sections:
                missing.append(f"{path.relative_to(ROOT)}: §{number} in {line.strip()!r}")
    assert missing == []
    assert cited >= 40


def references(text: str) -> list[tuple[str, str]]:
    """(section number, line) of each §N, including the N of ranges such as §2-5 and §2/§3."""
    found = []
    for line in text.splitlines():
        for start, end in re.findall(r"§(\d+)(?:-(\d+))?", line):
            found += [(str(n), line) for n in range(int(start), int(end or start) + 1)]
    return found


def test_a_section_reference_outside_the_protocol_itself_says_where_it_points():
    """A bare "§N" is ambiguous to a reader of one file: the line, or the file's own header,
    names docs/protocol.md."""
    vague = []
    for path in sources():
        if path == PROTOCOL or path.name == "test_docs.py":
            continue
        text = path.read_text()
        if "§" in text and "protocol.md" not in text:
            vague.append(str(path.relative_to(ROOT)))
    assert vague == []


def test_anchor_links_exist_and_nothing_points_outside_the_repository():
    anchors = set(re.findall(r'<a id="([\w-]+)"></a>', PROTOCOL.read_text()))
    assert len(anchors) == len(protocol_sections())
    broken, outside = [], []
    for path in sources():
        text = path.read_text()
        broken += [a for a in re.findall(r"protocol\.md#([\w-]+)", text) if a not in anchors]
        if "../shared" in text and path.name != "test_docs.py":
            outside.append(str(path.relative_to(ROOT)))
    assert broken == [] and outside == []


def test_the_architecture_names_every_package_and_the_layer_table_of_the_layout_test():
    from tests.test_layout import LAYERS

    text = (ROOT / "docs" / "architecture.md").read_text()
    packages = {p.name for p in (ROOT / "atom_tf").iterdir() if (p / "__init__.py").exists()}
    assert packages == set(LAYERS) - {""}
    for package, stage in LAYERS.items():
        if package:
            assert re.search(rf"^\| {stage} \| `{package}/` \|", text, re.M), package
