"""All the values of one tensor (or its gradient), a page at a time."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.reactive import var
from textual.widgets import Footer, Static

from modscope.control.updates import ValuesRead
from modscope.core.contract.fmt import format_count, format_value, printable
from modscope.tui.modal import CentredModal

PAGE = 256
INDEX_WIDTH = 14
VALUE_WIDTH = 11


class ValuesScreen(CentredModal[None]):
    """Pages of a tensor's flattened values with their indices; the worker reads each page."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "close", "Close", id="close_values"),
        Binding("pagedown,n,right", "page(1)", "Next page", id="next_page", priority=True),
        Binding("pageup,p,left", "page(-1)", "Previous page", id="previous_page", priority=True),
        Binding("home", "first", "First", show=False, priority=True),
        Binding("end", "last", "Last", show=False, priority=True),
        Binding("g", "toggle_grad", "Values/gradient", id="toggle_grad"),
    ]

    DEFAULT_CSS = """
    ValuesScreen > Vertical {
        width: 96%;
        height: 90%;
        padding: 0;
    }
    ValuesScreen #values-caption {
        height: 1;
        padding: 0 1;
    }
    """

    class PageWanted(Message):
        """Ask the worker for a page of values."""

        def __init__(self, path: str, offset: int, count: int, grad: bool) -> None:
            super().__init__()
            self.path = path
            self.offset = offset
            self.count = count
            self.grad = grad

    start = var(0, init=False)
    """The flat index of the first value of the page shown (or asked for)."""
    grad = var(False, init=False)
    """Whether the gradient is shown instead of the values (`g`)."""

    def __init__(self, path: str, numel: int, is_parameter: bool) -> None:
        super().__init__()
        self.path = path
        self.numel = numel
        self.is_parameter = is_parameter
        self.page: ValuesRead | None = None
        self._body = Text()

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(id="values-caption")
            with VerticalScroll():
                yield Static(Text("reading…", style="dim"), id="values-body")
        yield Footer()

    def on_mount(self) -> None:
        self._request()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "toggle_grad":
            return self.is_parameter
        if action == "page":
            step = int(parameters[0]) if parameters else 1  # type: ignore[call-overload]
            target = self.start + step * PAGE
            return None if target < 0 or target >= max(self.numel, 1) else True
        return True

    def action_page(self, step: int) -> None:
        target = self.start + step * PAGE
        if 0 <= target < max(self.numel, 1):
            self.start = target

    def action_first(self) -> None:
        self.start = 0

    def action_last(self) -> None:
        self.start = max(0, (self.numel - 1) // PAGE * PAGE)

    def action_toggle_grad(self) -> None:
        self.grad = not self.grad

    def watch_start(self) -> None:
        self._request()

    def watch_grad(self) -> None:
        self._request()

    def _request(self) -> None:
        self.post_message(self.PageWanted(self.path, self.start, PAGE, self.grad))

    def show_page(self, page: ValuesRead) -> None:
        """A page arrived from the worker (ignored when it is not the one asked for last)."""
        if page.path != self.path or page.grad != self.grad or page.offset != self.start:
            return
        self.page = page
        self.numel = page.numel or self.numel
        caption = Content.assemble(
            (printable(self.path), "bold"), (" .grad" if self.grad else "", "$text-success")
        )
        if page.values:
            last = page.offset + len(page.values)
            pages = max(1, -(-page.numel // PAGE))
            caption += Content.styled(
                f"  values {format_count(page.offset + 1)}-{format_count(last)} of "
                f"{format_count(page.numel)} (page {page.offset // PAGE + 1} of "
                f"{pages})",
                "dim",
            )
        self.query_one("#values-caption", Static).update(caption)
        self._body = self._render_page(page)
        self.query_one("#values-body", Static).update(self._body)
        self.refresh_bindings()

    def _render_page(self, page: ValuesRead) -> Text:
        """Rows of `[i, j]` and as many values as fit the width (a multiple of 4)."""
        width = self.query_one(VerticalScroll).scrollable_content_region.width or 100
        per_line = max(1, (width - INDEX_WIDTH - 1) // (VALUE_WIDTH + 2))
        if per_line > 4:
            per_line -= per_line % 4
        body = Text(no_wrap=True)
        if page.note:
            body.append(printable(page.note) + "\n", style="dim")
        for i in range(0, len(page.values), per_line):
            index = _unravel(page.offset + i, page.shape)
            body.append(f"{index:>{INDEX_WIDTH}} ", style="dim")
            body.append(
                "  ".join(
                    f"{format_value(v):>{VALUE_WIDTH}}" for v in page.values[i : i + per_line]
                )
            )
            body.append("\n")
        return body

    def on_resize(self) -> None:
        if self.page is not None:
            self._body = self._render_page(self.page)
            self.query_one("#values-body", Static).update(self._body)

    @property
    def text(self) -> str:
        return self._body.plain


def _unravel(flat: int, shape: tuple[int, ...]) -> str:
    """The multi-index of a flat, row-major position: `[3, 17]`."""
    if not shape:
        return "[]"
    index = []
    for dim in reversed(shape):
        flat, i = divmod(flat, dim) if dim else (flat, 0)
        index.append(i)
    return "[" + ", ".join(str(i) for i in reversed(index)) + "]"
