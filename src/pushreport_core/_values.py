"""Domain values: a parsed :class:`Report` and a stored :class:`Registration`.

All values are frozen; changing one means ``attrs.evolve``. Untrusted input never reaches
these classes directly: it goes through :func:`pushreport_core.parse_request`, which
validates every field first. Validators here only guard invariants.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timezone
from typing import Any, Callable, Literal, Mapping

import attrs

from ._policy import Policy, merged

__all__ = [
    "Secret",
    "Request",
    "Report",
    "Registration",
    "TokenPair",
    "Purpose",
    "TOKEN_FIELDS",
    "REGISTRATION_FIELDS",
    "REPORTED_FIELDS",
    "extra_dict",
    "format_time",
    "parse_time",
]

Purpose = Literal["call", "message"]

#: The four fields that travel as two (token, app id) pairs.
TOKEN_FIELDS = ("token_calls", "appid_calls", "token_msgs", "appid_msgs")


class Secret:
    """A credential (the account password) that never shows itself.

    ``repr()`` and ``str()`` are redacted, it is not JSON-serialisable and it does not
    pickle, so it cannot end up in a log line, a stored row or an error message by
    accident. :meth:`reveal` hands the value to the one place that needs it
    (authentication); :meth:`matches` compares in constant time.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def matches(self, other: str) -> bool:
        """Whether *other* is this secret, in constant time: the SHA-256 digests of the
        two are compared, never the texts, so that the time taken tells neither their
        content nor their lengths."""
        return hmac.compare_digest(_sha256(self._value), _sha256(other))

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return self.matches(other._value)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(Secret)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled")

    def __bool__(self) -> bool:
        return bool(self._value)


def _sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _utc(instance: Any, attribute: attrs.Attribute[Any], value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() != timezone.utc.utcoffset(None):
        raise ValueError(f"{attribute.name} must be an aware datetime in UTC, got {value!r}")


def extra_dict(value: Mapping[str, str] | None) -> dict[str, str]:
    """``extra`` as a plain dict (``None``: empty)."""
    return dict(value) if value else {}


@attrs.frozen(kw_only=True)
class TokenPair:
    """A device token and the app id to send it with: what the push gateway needs."""

    token: str
    app_id: str


def _known() -> Any:
    """A field that a report may not know (``None``): :attr:`Policy.KEEP_KNOWN`."""
    return attrs.field(default=None, metadata=merged(Policy.KEEP_KNOWN))


@attrs.frozen(kw_only=True)
class _Reported:
    """The fields a report carries and a registration stores: declared once, for both,
    each with its merge policy (:class:`~pushreport_core.Policy`)."""

    selector: str = attrs.field(metadata=merged(Policy.KEY))
    username: str | None = _known()
    token_calls: str | None = _known()
    appid_calls: str | None = _known()
    token_msgs: str | None = _known()
    appid_msgs: str | None = _known()
    extra: dict[str, str] = attrs.field(
        factory=dict, converter=extra_dict, hash=False, metadata=merged(Policy.MERGE_EXTRA)
    )
    user_agent: str | None = _known()


@attrs.frozen(kw_only=True)
class Report(_Reported):
    """One report as the app sent it, validated.

    A field that is ``None`` was not known to the app at the time (the iOS delay), and
    never erases a stored value when merged.
    """

    #: The account password, when the template carries ``%account[password]%``. Handed
    #: to authentication only: never stored, never shown.
    password: Secret | None = attrs.field(default=None, repr=False, eq=False, hash=False)
    #: Which shape the request matched ("template", "default-query", ...): for logs.
    shape: str = attrs.field(default="template", eq=False, hash=False)

    def stored_fields(self) -> dict[str, Any]:
        """The fields a backend writes, by column name (:data:`REPORTED_FIELDS`): never
        the password (nor the shape, which is for logs). ``extra`` is a plain dict."""
        fields = {name: getattr(self, name) for name in REPORTED_FIELDS}
        fields["extra"] = dict(self.extra)
        return fields

    @classmethod
    def from_stored(cls, data: Mapping[str, Any]) -> Report:
        """The inverse of :meth:`stored_fields` (a backend's log record of a report)."""
        return cls(**_arguments(_REPORTED, REPORTED_FIELDS, data))


@attrs.frozen(kw_only=True)
class Registration(_Reported):
    """What is stored for one ``selector`` (one account in one app install).

    Each field declares how a report changes it (its :class:`~pushreport_core.Policy`):
    :data:`~pushreport_core.MERGE_POLICY` is read from here.
    """

    first_seen: datetime = attrs.field(validator=_utc, metadata=merged(Policy.EARLIEST))
    last_seen: datetime = attrs.field(validator=_utc, metadata=merged(Policy.LATEST))
    reports: int = attrs.field(
        default=1, validator=attrs.validators.ge(1), metadata=merged(Policy.COUNT)
    )

    def pair(self, purpose: Purpose) -> TokenPair | None:
        """The pair to push with: PushKit for calls, the other pair for everything else.

        ``None`` when this registration lacks the token (or app id) the purpose needs.
        """
        if purpose == "call":
            token, app_id = self.token_calls, self.appid_calls
        elif purpose == "message":
            token, app_id = self.token_msgs, self.appid_msgs
        else:
            raise ValueError(f"purpose must be 'call' or 'message', not {purpose!r}")
        if token is None or app_id is None:
            return None
        return TokenPair(token=token, app_id=app_id)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with exactly :data:`REGISTRATION_FIELDS` as keys."""
        data = {name: getattr(self, name) for name in REGISTRATION_FIELDS}
        for name, encode in _TO_JSON:
            data[name] = encode(data[name])
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Registration:
        """The inverse of :meth:`to_json` (for backends that store JSON)."""
        values = _arguments(_REGISTERED, REGISTRATION_FIELDS, data)
        for name, decode in _FROM_JSON:
            if name in values:
                values[name] = decode(values[name])
        return cls(**values)


def _arguments(
    required: frozenset[str], names: tuple[str, ...], data: Mapping[str, Any]
) -> dict[str, Any]:
    """The keyword arguments *data* gives for fields *names*: a *required* one must be
    there (``KeyError``), an absent other one takes its default."""
    return {name: data[name] for name in names if name in data or name in required}


def _required(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in attrs.fields(cls) if f.default is attrs.NOTHING)


def _names_only(items: list[str]) -> str:
    return "&".join(item.partition("=")[0] + ("=…" if "=" in item else "") for item in items)


def _masked_target(target: str) -> str:
    """The target for a repr: the path, and the names of the query's and of the path's
    ``&key=value`` items without their values (a password or a shared secret may travel
    in them)."""
    path, qmark, query = target.partition("?")
    if "&" in path:
        segments = []
        for segment in path.split("/"):
            first, *rest = segment.split("&")
            segments.append("&".join((first, _names_only(rest))) if rest else first)
        path = "/".join(segments)
    if qmark:
        query = _names_only(query.split("&"))
    return repr(f"{path}{qmark}{query}")


def format_time(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` and always six fractional digits.

    Microseconds are kept so that values round-trip, and always written so that text
    order is time order (a backend may compare the strings, as SQLite's MIN/MAX do).
    """
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(value: str) -> datetime:
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


#: The fields of a report that a registration stores, in order: what a backend writes
#: (:meth:`Report.stored_fields`), never the password.
REPORTED_FIELDS = tuple(f.name for f in attrs.fields(_Reported))
#: The keys of a registration as ``pushreport list --json`` prints it, in order: the
#: fields of :class:`Registration`.
REGISTRATION_FIELDS = tuple(f.name for f in attrs.fields(Registration))
_REPORTED = _required(Report)
_REGISTERED = _required(Registration)

# The annotations are text (``from __future__ import annotations``): resolved once, so
# that the JSON form of each field follows from its declared type.
attrs.resolve_types(Registration)
_ENCODERS: Mapping[Any, Callable[[Any], Any]] = {datetime: format_time, dict[str, str]: dict}
_DECODERS: Mapping[Any, Callable[[Any], Any]] = {datetime: parse_time, int: int}
_TO_JSON = tuple(
    (f.name, _ENCODERS[f.type]) for f in attrs.fields(Registration) if f.type in _ENCODERS
)
_FROM_JSON = tuple(
    (f.name, _DECODERS[f.type]) for f in attrs.fields(Registration) if f.type in _DECODERS
)


@attrs.frozen(kw_only=True)
class Request:
    """The parts of an HTTP request that a report can travel in.

    ``target`` is the *raw* request target (path and query, still percent-encoded) as
    it came over the wire, so that a token carrying ``%2F`` in a path segment survives.
    """

    method: str
    target: str = attrs.field(repr=lambda t: _masked_target(t))
    body: bytes = attrs.field(default=b"", repr=lambda b: f"<{len(b)} bytes>")
    content_type: str | None = None
    user_agent: str | None = None
    #: The ``Authorization`` header, for authentication plugins (HTTP Digest). Never
    #: shown: a digest response can be attacked offline.
    authorization: str | None = attrs.field(default=None, repr=False)
    #: The client's address (``REMOTE_ADDR``, or the proxy header configured), for
    #: per-client limits.
    client: str | None = None

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]
