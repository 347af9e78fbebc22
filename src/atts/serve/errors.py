"""Errors a client sees: ``ApiError`` carries the HTTP status and the OpenAI error body.

Every non-2xx answer of the server has the shape the OpenAI API uses, so the official clients
raise their typed exceptions (``BadRequestError``, ``RateLimitError``, ...) with our message:

    {"error": {"message": str, "type": str, "param": str | null, "code": str | null}}
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(
    message: str, *, type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad_request(message: str, *, param: str | None = None,
                code: str | None = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def shutting_down() -> ApiError:
    """The answer to a request the server stopped because it is shutting down."""
    return ApiError(503, "the server is shutting down and stopped this request; retry it "
                    "once the server is back", type="server_error", code="server_shutting_down")
