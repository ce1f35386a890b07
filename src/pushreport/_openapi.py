"""The OpenAPI 3.1 document of the lookup endpoint and the health checks.

The description is package data (``openapi.json`` beside this module), written once
with placeholders for what the configuration decides: ``{lookup}`` (``[lookup] path``),
``{healthz}`` and ``{readyz}`` (``[health]``'s paths; left out when ``[health]`` is
off). :func:`openapi_document` fills them in. The lookup endpoint serves the result at
``{lookup}/openapi.json`` (:class:`~pushreport.LookupEndpoint`, no token needed: it
holds no data; ``info.version`` is the API's, not the package's, which it does not
tell), and ``python -m pushreport._docs`` writes the default one to
``docs/openapi.json``.
"""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._config import Config

__all__ = ["lookup_document", "openapi_document"]

#: The placeholders of the template's paths.
_LOOKUP, _HEALTHZ, _READYZ = "{lookup}", "{healthz}", "{readyz}"


@functools.cache
def _template() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("openapi.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def openapi_document(config: Config) -> dict[str, Any]:
    """The OpenAPI document of *config*'s lookup endpoint and health checks: a new,
    JSON-ready dict each call."""
    health = config.health
    return _filled(config.lookup.path, (health.healthz, health.readyz) if health.enabled else None)


def lookup_document(path: str) -> dict[str, Any]:
    """The OpenAPI document of a lookup endpoint under *path* alone (no health checks)."""
    return _filled(path, None)


def _filled(lookup: str, health: tuple[str, str] | None) -> dict[str, Any]:
    document = copy.deepcopy(_template())
    places = {_LOOKUP: lookup}
    if health is not None:
        places[_HEALTHZ], places[_READYZ] = health
    paths: dict[str, Any] = {}
    for key, item in document["paths"].items():
        for placeholder, value in places.items():
            if key.startswith(placeholder):
                paths[value + key[len(placeholder) :]] = item
                break
    document["paths"] = paths
    return document
