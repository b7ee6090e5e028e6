"""Reads the status page's DOM (as Chromium dumps it, or as served) into plain Python values."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Row:
    """One table row: its attributes and its cells' text by their data-label."""

    attrs: dict[str, str]
    cells: dict[str, str] = field(default_factory=dict)


class PageDom(HTMLParser):
    """Rows, server cards, links, meta tags and the title of the status page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.rows: list[Row] = []
        self.servers: list[dict[str, str]] = []
        self.links: list[str] = []
        self.metas: list[dict[str, str]] = []
        self.title = ""
        self.text: list[str] = []
        self._cell: str | None = None
        self._in_title = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "tr" and "class" in a:
            self.rows.append(Row(a))
        elif tag == "td" and self.rows:
            self._cell = a.get("data-label", "")
            self.rows[-1].cells[self._cell] = ""
        elif tag == "div" and a.get("class") == "server":
            self.servers.append(a)
        elif tag == "a":
            self.links.append(a.get("href", ""))
        elif tag == "meta":
            self.metas.append(a)
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_title:
            self.title += data
        if self._cell is not None and self.rows:
            self.rows[-1].cells[self._cell] += data

    def of(self, cls: str) -> list[Row]:
        """The rows of one class (prompt, incident, probe)."""
        return [r for r in self.rows if r.attrs.get("class") == cls]
