"""The command palette's "go to module" provider: every module by its dotted path."""

from __future__ import annotations

from functools import partial
from typing import Protocol

from rich.text import Text
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.content import Content

from modscope.report.labels import shown_path

DISCOVERY_LIMIT = 50


class _GoesToModules(Protocol):
    def module_paths(self) -> list[str]: ...

    def go_to(self, path: str) -> None: ...


class ModuleProvider(Provider):
    """`ctrl+p` then a path: `layers.0.self_attn` (fuzzy); selecting one selects it in the tree."""

    def _app(self) -> _GoesToModules | None:
        app = self.app
        return app if hasattr(app, "module_paths") and hasattr(app, "go_to") else None

    async def discover(self) -> Hits:
        app = self._app()
        if app is None:
            return
        for path in app.module_paths()[:DISCOVERY_LIMIT]:
            yield DiscoveryHit(
                Text(f"go to {shown_path(path) if path else '(root)'}"),
                partial(app.go_to, path),
                help="select this module in the tree",
            )

    async def search(self, query: str) -> Hits:
        app = self._app()
        if app is None:
            return
        matcher = self.matcher(query)
        for path in app.module_paths():
            if not path:
                continue
            # Matched as shown (escaped, long names cut), so the highlighted offsets fall on it.
            text = shown_path(path)
            score, offsets = matcher.fuzzy_search.match(matcher.query, text)
            if score > 0:
                # Not matcher.highlight(): it parses the path as markup (`blocks[attn]`).
                shown = Content(text)
                for offset in offsets:
                    shown = shown.stylize(matcher.match_style, offset, offset + 1)
                yield Hit(score, shown, partial(app.go_to, path), text=text, help="go to module")
