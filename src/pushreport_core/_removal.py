"""The Account Removal Reporter: the app's "forget me" call, parsed like a report.

The app calls it when the user logs out or removes the account, so that the server
deletes what the Push Token Reporter stored. It is configured like every Acrobits web
service (``accountRemovalReporterUrl``, ``…PostData``, ``…ContentType``, ``…Method``)
with the same variables, ``%selector%`` first; so a removal template is a
:class:`Template` with another prefix, and only ``%selector%`` is required.

What a removal deletes (:meth:`Removal.applies_to`): the registration of its selector,
unless the removal names a token (``%pushTokenIncomingCall%``, ``%pushTokenOther%``)
and the stored one is a *different* known token. A different stored token means a newer
report reached the receiver after this removal was sent (the app was reinstalled or
logged in again and reported afresh under the same selector), so the removal is stale:
it must not erase the fresh registration. A whole registration goes, never single
tokens: a logged-out account must get no pushes at all, and a registration with one pair
cleared would still get calls.

Removing what is already gone is a success (the app retries a non-2xx, so a removal may
come twice); so is a stale removal, which is answered like one that deleted something.

With no removal template configured, the **default removal shapes** accept:

- ``GET /removal/?selector=…&username=…&token_calls=…&token_msgs=…`` (query string);
- ``POST``/``PUT``/``DELETE /removal/`` (or ``/removal/<username>/``) with a form or a
  JSON body, the reporter's field names;
- ``DELETE`` on the reporter's default paths: ``/token/?selector=…``,
  ``/token/<username>/`` with a body, ``/pushToken/<username>/<selector>/<pushToken>``.
"""

from __future__ import annotations

import enum
import re
from typing import Any, Iterable, Literal, Mapping

import attrs

from ._client import render_request
from ._defaults import TOKEN_PATH, DefaultShapes, locate_default, on_default_path, parse_default
from ._errors import InvalidReport, MethodNotAllowed
from ._fields import TargetValue
from ._lifecycle import may_write
from ._report import DEFAULT_MAX_BODY, Shapes, parse_request
from ._templates import Template
from ._values import Registration, Report, Request, Secret, extra_dict

__all__ = [
    "Removal",
    "RemovalPlan",
    "Claim",
    "claim",
    "DefaultRemovalShapes",
    "DEFAULT_REMOVAL_SHAPES",
    "REMOVAL_PREFIX",
    "DEFAULT_REMOVAL_ACCOUNT_XML",
    "parse_removal",
    "removal_template",
    "default_removal_template",
    "shapes_overlap",
]

#: The Account XML prefix of the Account Removal Reporter.
REMOVAL_PREFIX = "accountRemovalReporter"

#: The removal shape pushreport recommends: GET with the selector and both tokens (so
#: that a stale removal cannot erase a newer registration) in the query string.
DEFAULT_REMOVAL_ACCOUNT_XML = {
    "accountRemovalReporterUrl": (
        "{base_url}/removal/?selector=%selector%&username=%account[username]%"
        "&token_calls=%pushTokenIncomingCall%&token_msgs=%pushTokenOther%"
    ),
}

_REMOVAL_PATH = re.compile(r"/removal(?:/([^/]*)/?)?")
_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE")
_BODY_METHODS = ("POST", "PUT", "DELETE")


class RemovalPlan(enum.Enum):
    """What a removal does to the registration stored for its selector
    (:meth:`Removal.plan`); the receiver carries it out in each backend."""

    #: The registration goes.
    DELETE = "delete"
    #: Nothing is stored: already removed (the app retries a non-2xx). A success.
    GONE = "gone"
    #: The registration holds another token than the removal names: it is newer than
    #: the removal, and stays. A success.
    KEEP_NEWER = "keep-newer"
    #: It is stored under another username than the identified user's: refused (403),
    #: nothing deleted anywhere.
    REFUSE = "refuse"


@attrs.frozen(kw_only=True)
class Removal:
    """One removal as the app sent it, validated: which registration to delete.

    A token that is ``None`` was not named (or not known to the app); a named one guards
    the removal against erasing a newer registration (:meth:`applies_to`).
    """

    selector: str
    username: str | None = None
    token_calls: str | None = None
    token_msgs: str | None = None
    extra: dict[str, str] = attrs.field(factory=dict, converter=extra_dict, hash=False)
    user_agent: str | None = None
    #: The account password, when the template carries ``%account[password]%``: handed
    #: to authentication only, never stored, never shown.
    password: Secret | None = attrs.field(default=None, repr=False, eq=False, hash=False)
    #: Which shape the request matched ("template", "removal-query", ...): for logs.
    shape: str = attrs.field(default="template", eq=False, hash=False)

    @classmethod
    def from_report(cls, report: Report) -> Removal:
        """The removal a parsed request carries (app ids are not needed to remove)."""
        return cls(**{name: getattr(report, name) for name in _REMOVAL_FIELDS})

    def as_report(self) -> Report:
        """This removal as a :class:`Report` (no app ids), for hooks written for reports
        (authentication plugins read ``username``, ``selector`` and ``password``)."""
        return Report(**{name: getattr(self, name) for name in _REMOVAL_FIELDS})

    def applies_to(self, registration: Registration | None) -> bool:
        """Whether this removal deletes *registration* (the one stored for its selector).

        ``False`` when there is none, or when a token this removal names differs from
        the stored, known one: the registration is newer than the removal.
        """
        if registration is None or registration.selector != self.selector:
            return False
        for name in ("token_calls", "token_msgs"):
            named = getattr(self, name)
            stored = getattr(registration, name)
            if named is not None and stored is not None and named != stored:
                return False
        return True

    def plan(self, stored: Registration | None, *, identified: bool = False) -> RemovalPlan:
        """What this removal does to *stored*, the registration stored for its selector.

        *identified*: authentication vouched for the username, so a selector stored
        under another one is refused (:func:`~pushreport_core.may_write`); the backend
        that decides ownership asks with it, the others without.
        """
        if stored is None:
            return RemovalPlan.GONE
        if stored.selector != self.selector:
            raise ValueError(f"a removal of {self.selector!r} has no plan for {stored.selector!r}")
        if identified and not may_write(stored, self.username):
            return RemovalPlan.REFUSE
        return RemovalPlan.DELETE if self.applies_to(stored) else RemovalPlan.KEEP_NEWER


#: A removal's fields: a report's, less the app ids.
_REMOVAL_FIELDS = tuple(f.name for f in attrs.fields(Removal))


class DefaultRemovalShapes:
    """Parser for the default removal shapes (no removal template configured)."""

    #: Paths the default removal shapes own, for documentation and logs.
    paths = (
        "/removal/",
        "/removal/<username>/",
        "DELETE /token/",
        "DELETE /token/<username>/",
        "DELETE /pushToken/<username>/<selector>/<pushToken>",
    )

    def owns(self, method: str, raw_path: str) -> bool:
        method = method.upper()
        m = _REMOVAL_PATH.fullmatch(raw_path)
        if m is not None:
            # "/removal/<username>/" takes a body; a portal's own page under /removal/
            # (GET /removal/help) is not a removal and passes through.
            return not m.group(1) or method in _BODY_METHODS
        if method != "DELETE":
            return False
        # DELETE on the reporter's default paths; their other methods are the reporter's.
        return on_default_path(raw_path)

    def allowed_methods(self) -> tuple[str, ...]:
        return _METHODS

    def target_values(self, target: str) -> list[TargetValue]:
        """Where the values this parser reads sit in *target*, and what each fills (for
        redaction); whether or not the request parses."""
        path = target.partition("?")[0]
        token_path = _REMOVAL_PATH if _REMOVAL_PATH.fullmatch(path) is not None else TOKEN_PATH
        return locate_default(target, token_path)

    def parse_request(self, request: Request) -> Report:
        method = request.method.upper()
        if _REMOVAL_PATH.fullmatch(request.path) is not None:
            if method not in _METHODS:
                raise MethodNotAllowed(f"method {method} is not allowed here", allowed=_METHODS)
            return parse_default(
                request, _REMOVAL_PATH, body_methods=_BODY_METHODS, shape="removal"
            )
        if not on_default_path(request.path):
            raise InvalidReport("path is not one of the default removal paths")
        if method != "DELETE":
            raise MethodNotAllowed(f"method {method} is not allowed here", allowed=("DELETE",))
        return parse_default(request, TOKEN_PATH, body_methods=_BODY_METHODS, shape="removal")


DEFAULT_REMOVAL_SHAPES = DefaultRemovalShapes()


def removal_template(
    *, url: str, post_data: str = "", content_type: str = "", method: str = ""
) -> Template:
    """Compile the ``accountRemovalReporter*`` values into a template (only
    ``%selector%`` is required; errors name ``accountRemovalReporterUrl``...)."""
    return Template.parse(
        url=url,
        post_data=post_data,
        content_type=content_type,
        method=method,
        prefix=REMOVAL_PREFIX,
        require=("selector",),
    )


def default_removal_template(base_url: str = "http://127.0.0.1:8080") -> Template:
    """The template of :data:`DEFAULT_REMOVAL_ACCOUNT_XML` for *base_url*."""
    return removal_template(
        url=DEFAULT_REMOVAL_ACCOUNT_XML["accountRemovalReporterUrl"].format(
            base_url=base_url.rstrip("/")
        )
    )


def parse_removal(
    request: Request, shapes: Shapes | None = None, *, max_body: int = DEFAULT_MAX_BODY
) -> Removal:
    """Parse and validate a removal *request* against *shapes* (``None``: the default
    removal shapes).

    Returns a :class:`Removal` or raises :class:`InvalidReport` (or a subclass) with a
    short reason; never any other exception, whatever bytes arrive. The values are
    validated as a report's are (a malformed selector or token is refused).
    """
    chosen = DEFAULT_REMOVAL_SHAPES if shapes is None else shapes
    # The same size limits and validation as a report's: one code path.
    return Removal.from_report(parse_request(request, chosen, max_body=max_body))


# -- keeping the reporter's and the removal's requests apart ------------------------------

_DEFAULT_SAMPLES: Mapping[type, tuple[tuple[str, str], ...]] = {
    DefaultShapes: (
        ("GET", "/token/"),
        ("POST", "/token/"),
        ("POST", "/token/u/"),
        ("GET", "/pushToken/u/s/t&appid=a"),
    ),
    DefaultRemovalShapes: (
        ("GET", "/removal/"),
        ("POST", "/removal/u/"),
        ("DELETE", "/token/"),
        ("DELETE", "/token/u/"),
        ("DELETE", "/pushToken/u/s/t"),
    ),
}


def _samples(shapes: Any) -> Iterable[tuple[str, str]]:
    if isinstance(shapes, Template):
        request = render_request(shapes, _SampleValues())
        yield request.method, request.path
        return
    yield from _DEFAULT_SAMPLES.get(type(shapes), ())


class _SampleValues(dict):  # type: ignore[type-arg]
    """Every variable is ``x``: enough to render a template's path."""

    def get(self, key: Any, default: Any = None) -> str:
        return "x"


#: Which web service a request is for: the Push Token Reporter or the Account Removal
#: Reporter.
Claim = Literal["report", "removal"]


def claim(
    method: str, raw_path: str, *, reporter: Shapes, removal: Shapes | None = None
) -> Claim | None:
    """Which shapes take a *method* request for *raw_path* (still percent-encoded):
    ``"removal"``, ``"report"``, or ``None`` when neither does (it passes through).

    The removal shapes take what they own and accept; a request on a path both own
    goes to the one that accepts its method (a template on the reporter's path with
    ``DELETE``), and one neither accepts to the reporter, which answers 405.
    """
    if removal is not None and removal.owns(method, raw_path):
        if method.upper() in removal.allowed_methods() or not reporter.owns(method, raw_path):
            return "removal"
        return "report"
    return "report" if reporter.owns(method, raw_path) else None


def _claims(shapes: Any, method: str, path: str) -> bool:
    return bool(shapes.owns(method, path)) and method in shapes.allowed_methods()


def shapes_overlap(reporter: Shapes, removal: Shapes) -> tuple[str, str] | None:
    """A request (method, path) that both *reporter* and *removal* would take, or None.

    The receiver routes a request to the removal shapes when they own its path and
    accept its method, else to the reporter's: two templates on one path need
    different methods. This checks each side's typical requests against the other.
    """
    for method, path in _samples(reporter):
        if _claims(removal, method, path):
            return method, path
    for method, path in _samples(removal):
        if _claims(reporter, method, path):
            return method, path
    return None
