"""Replace a script's own section of a Markdown file (between its start and end markers)."""

from __future__ import annotations

from pathlib import Path


def replace_section(path: Path, start: str, end: str, heading: str, section: str) -> None:
    """``section`` must begin with ``start`` and end with ``end``; appended under ``heading``
    the first time."""
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in doc and end in doc:
        doc = doc[: doc.index(start)] + section + doc[doc.index(end) + len(end) :]
    else:
        doc = f"{doc.rstrip()}\n\n## {heading}\n\n{section}\n"
    path.write_text(doc)
