"""Every relative link and image in README.md and docs/*.md points to a file in the repository, and every
`#anchor` to a heading of the file it names (GitHub's anchors: lower case, punctuation dropped, spaces to -)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)|<img [^>]*src=\"([^\"]+)\"")


def anchors(document: Path) -> set[str]:
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", document.read_text(), flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def relative_links(document: Path) -> list[str]:
    targets = [markdown or image for markdown, image in LINK.findall(document.read_text())]
    return [target for target in targets if not re.match(r"[a-z]+:", target)]


def test_the_documents_link_to_each_other():
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)\)", (ROOT / "README.md").read_text()))
    assert linked == {str(document.relative_to(ROOT)) for document in DOCUMENTS[1:]}  # README indexes all of docs/


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda document: str(document.relative_to(ROOT)))
def test_every_relative_link_resolves(document):
    broken = []
    for target in relative_links(document):
        path, _, anchor = target.partition("#")
        file = (document.parent / path).resolve() if path else document
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in anchors(file)):
            broken.append(target)
    assert broken == []
