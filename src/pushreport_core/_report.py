"""Parsing a request into a report: the one call an adapter makes."""

from __future__ import annotations

from typing import Protocol

from ._defaults import DEFAULT_SHAPES
from ._errors import RequestTooLarge
from ._fields import TargetValue
from ._values import Report, Request

__all__ = ["parse_request", "Shapes", "DEFAULT_MAX_BODY", "MAX_TARGET"]

#: The default limit on a request body, in bytes.
DEFAULT_MAX_BODY = 16 * 1024
#: The longest request target accepted, in characters.
MAX_TARGET = 8 * 1024


class Shapes(Protocol):
    """What the adapter needs of a configured template or of the default shapes."""

    def owns(self, method: str, raw_path: str) -> bool:
        """Whether a *method* request for *raw_path* (still percent-encoded) is ours."""

    def allowed_methods(self) -> tuple[str, ...]: ...

    def parse_request(self, request: Request) -> Report: ...

    def target_values(self, target: str) -> list[TargetValue]:
        """Where each value :meth:`parse_request` reads from *target* (the raw request
        target) sits, and what it fills; never raises. What redaction masks
        (:func:`pushreport_core.redact_target`)."""


def parse_request(
    request: Request, template: Shapes | None = None, *, max_body: int = DEFAULT_MAX_BODY
) -> Report:
    """Parse and validate *request* against *template* (``None``: the default shapes).

    Returns a :class:`Report` or raises :class:`InvalidReport` (or one of its subclasses)
    with a short reason; never any other exception, whatever bytes arrive.
    """
    if len(request.body) > max_body:
        raise RequestTooLarge(f"body is too large ({len(request.body)} > {max_body} bytes)")
    if len(request.target) > MAX_TARGET:
        raise RequestTooLarge(
            f"request target is too long ({len(request.target)} > {MAX_TARGET} characters)"
        )
    shapes = DEFAULT_SHAPES if template is None else template
    return shapes.parse_request(request)
