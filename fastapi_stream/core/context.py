"""What a handler receives by the type of a parameter, rather than from the message's
content: the message itself, the logger, the broker, the lifespan state and FastAPI's
``BackgroundTasks``. ``core/handler.py`` reads signatures; this module says what each
context type means and holds the values of one call."""

from __future__ import annotations

import enum
import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, get_args, get_origin

from fastapi import BackgroundTasks
from starlette.background import BackgroundTasks as StarletteBackgroundTasks
from starlette.datastructures import State

from fastapi_stream.core.message import StreamMessage

__all__ = ["CallContext", "ContextKind", "context_kind"]


class ContextKind(enum.Enum):
    """Values a handler receives by the type of its parameter."""

    MESSAGE = "message"
    LOGGER = "logger"
    BROKER = "broker"
    STATE = "state"
    BACKGROUND = "background"


@dataclass(slots=True)
class CallContext:
    """What one message's handler call may be given besides the message's own content."""

    message: StreamMessage
    broker: Any
    logger: logging.Logger
    state: State
    overrides: Mapping[Callable[..., Any], Callable[..., Any]] = field(default_factory=dict)
    #: Made when a handler or dependency asks for ``BackgroundTasks``.
    background: BackgroundTasks | None = None

    def get(self, kind: ContextKind) -> Any:
        if kind is ContextKind.MESSAGE:
            return self.message
        if kind is ContextKind.LOGGER:
            return self.logger
        if kind is ContextKind.BROKER:
            return self.broker
        if kind is ContextKind.BACKGROUND:
            if self.background is None:
                self.background = BackgroundTasks()
            return self.background
        return self.state

    async def run_background(self) -> None:
        """Run the tasks the handler added, in order, after it returned and before its
        message is acknowledged (a crash meanwhile delivers the message again). A task
        that raises is logged with its traceback; the message is acknowledged all the
        same, as an HTTP response is sent before FastAPI's background tasks run."""
        tasks, self.background = self.background, None
        if tasks is None:
            return
        for task in tasks.tasks:
            try:
                await task()
            except Exception:
                self.logger.exception(
                    "background task %s of message %s failed",
                    getattr(task.func, "__qualname__", repr(task.func)),
                    self.message.message_id,
                )


def context_kind(annotation: Any) -> ContextKind | None:
    from fastapi_stream.core.broker import StreamBroker  # the broker module imports this one

    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if not inspect.isclass(annotation):
        return None
    if issubclass(annotation, StreamMessage):
        return ContextKind.MESSAGE
    if issubclass(annotation, logging.Logger):
        return ContextKind.LOGGER
    if issubclass(annotation, StreamBroker):
        return ContextKind.BROKER
    if issubclass(annotation, State):
        return ContextKind.STATE
    if issubclass(annotation, StarletteBackgroundTasks):  # FastAPI's is a subclass
        return ContextKind.BACKGROUND
    return None
