"""The walk over chat chunks shared by the stream renderers whose wire formats open and close
items (Responses, Anthropic Messages): the first choice's text and tool calls as "open an item
if another is open, then add to it", its finish reason and the chunk's usage kept for the end.
"""

from __future__ import annotations

from typing import Any


class BlockStream:
    """Base of a `StreamRenderer` made of blocks: one per run of text, one per tool call,
    closed before the next opens. Subclasses emit their own events from the hooks."""

    def __init__(self) -> None:
        self.open: str | int | None = None  # "text", a tool call's index, or nothing
        self.finish_reason: Any = None
        self.usage: Any = None
        self.started = False
        self.failed = False

    def chunk(self, data: dict[str, Any]) -> list[str]:
        events = self._start(data.get("model"))
        if isinstance(data.get("usage"), dict):
            self.usage = data["usage"]
        for choice in (data.get("choices") or [])[:1]:
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self.open != "text":
                    events += self._close()
                    self.open = "text"
                    events += self._open_text()
                events += self._text(text)
            for call in delta.get("tool_calls") or []:
                key = int(call.get("index") or 0)
                function = call.get("function") or {}
                if self.open != key:
                    events += self._close()
                    self.open = key
                    events += self._open_call(call.get("id"), function.get("name") or "")
                arguments = function.get("arguments")
                if isinstance(arguments, str) and arguments:
                    events += self._arguments(arguments)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def _start(self, model: Any) -> list[str]:
        """The stream's opening events, once (on the first chunk, or at the end or an error
        if no chunk came)."""
        if self.started:
            return []
        self.started = True
        return self._opening(model)

    def _opening(self, model: Any) -> list[str]:
        raise NotImplementedError

    def _close(self) -> list[str]:
        raise NotImplementedError

    def _open_text(self) -> list[str]:
        raise NotImplementedError

    def _text(self, text: str) -> list[str]:
        raise NotImplementedError

    def _open_call(self, call_id: str | None, name: str) -> list[str]:
        raise NotImplementedError

    def _arguments(self, arguments: str) -> list[str]:
        raise NotImplementedError
