"""Kept for the modules that import :func:`shorten` from here: redaction lives in the
core (:func:`pushreport_core.redact_target`), derived from the parser."""

from __future__ import annotations

from pushreport_core import redact_target, shorten

__all__ = ["redact_target", "shorten"]
