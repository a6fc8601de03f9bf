"""Read a written page back as a browser would show it: the text inside each element
with an id, every link and image, and every tag (to find any that should not be there)."""

from __future__ import annotations

from html.parser import HTMLParser

VOID = {"br", "img", "meta", "hr", "input", "link", "wbr"}


class Page(HTMLParser):
    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.by_id: dict[str, str] = {}
        self.tags: list[tuple[str, dict]] = []
        self.text_parts: list[str] = []
        self._open: list[str | None] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag in VOID:
            return
        self._open.append(attrs.get("id"))
        if attrs.get("id"):
            self.by_id.setdefault(attrs["id"], "")

    def handle_endtag(self, tag):
        if tag not in VOID and self._open:
            self._open.pop()

    def handle_data(self, data):
        self.text_parts.append(data)
        for element in self._open:
            if element:
                self.by_id[element] += " " + data

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.text_parts).split())

    def text_of(self, element_id: str) -> str:
        return " ".join(self.by_id[element_id].split())

    def attrs(self, tag: str, name: str) -> list[str]:
        return [a[name] for t, a in self.tags if t == tag and name in a]
