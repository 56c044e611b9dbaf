"""Refuse request bodies over EQUIRECON_MAX_BODY_MB before anything parses them.

Checked twice: on ``Content-Length`` up front, and on the bytes actually
streamed (a client may omit or understate the header). The body is buffered
while counting, then replayed to the app; FastAPI buffers it anyway.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLarge, problem_response

__all__ = ["BodyLimitMiddleware"]


class BodyLimitMiddleware:
    """Answer 413 problem+json for bodies over ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send, int(declared))
            return
        chunks, total, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                await self._refuse(scope, receive, send, total)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for the disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: int) -> None:
        limit_mb = self.max_bytes / (1024 * 1024)
        error = PayloadTooLarge(
            f"request body of {size} bytes or more exceeds the limit of {limit_mb:g} MiB "
            "(EQUIRECON_MAX_BODY_MB)"
        )
        await problem_response(error)(scope, receive, send)
