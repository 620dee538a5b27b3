"""Print a benchmark's Markdown section and replace it in a file (between its markers)."""

from __future__ import annotations

from pathlib import Path


def publish(
    section: str, path: Path | None, start: str, end: str, heading: str | None = None
) -> None:
    """Print ``section`` (which begins with ``start`` and ends with ``end``); if ``path`` is
    given, replace the section there, or append it (under ``## heading``) the first time."""
    print(section)
    if path is None:
        return
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in doc and end in doc:
        doc = doc[: doc.index(start)] + section + doc[doc.index(end) + len(end) :]
    else:
        title = f"## {heading}\n\n" if heading else ""
        doc = f"{doc.rstrip()}\n\n{title}{section}\n"
    path.write_text(doc)
