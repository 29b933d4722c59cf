"""Reject bad request bodies with a clear 4xx before LitServe sees them.

LitServe answers malformed JSON and empty bodies with 500, and with batching an exception in
decode_request fails every request of the batch; a streaming response has already sent 200 when the
worker finds a problem. A pure ASGI middleware that reads the body first avoids all three.
"""

from typing import Callable

from starlette.responses import JSONResponse


class RequestRejected(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class BodyValidator:
    """For POST `path`: read the whole body (at most max_body_bytes), call validate(body), answer
    RequestRejected with its status and {"error": {"message", "type"}} (OpenAI's shape, which the
    official client reads), else replay the body to the application."""

    def __init__(self, app, path: str, validate: Callable[[bytes], None], max_body_bytes: int):
        self.app = app
        self.path = path
        self.validate = validate
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return await _reject(scope, receive, send, 413, f"request body exceeds {self.max_body_bytes} bytes")
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            self.validate(body)
        except RequestRejected as rejected:
            return await _reject(scope, receive, send, rejected.status, rejected.message)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _reject(scope, receive, send, status: int, message: str):
    kind = "invalid_request_error" if status < 500 else "server_error"
    await JSONResponse({"error": {"message": message, "type": kind}, "detail": message}, status_code=status)(scope, receive, send)


def parse_json_object(body: bytes) -> dict:
    import json

    if not body.strip():
        raise RequestRejected(400, "request body is empty: send a JSON object")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RequestRejected(400, "request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise RequestRejected(400, "request body must be a JSON object")
    return data

