"""pushreport_core: the pure, I/O-free heart of pushreport.

It contains no networking code, reads no file, no clock and no environment: time and
settings are arguments, results are values. It parses and validates the request the
Acrobits app sends to the Push Token Reporter, compiles the Account XML templates that
describe that request, merges a report into a stored registration, and renders the
Account XML keys for a configuration; and it models the app itself (:class:`AppModel`:
the request it sends, how it judges the answer, when it retries), which the conformance
kit in :mod:`pushreport_core.testing` builds on. For pushing, it picks the devices and
the token pair of a purpose (:func:`push_targets`), builds the gateway's JSON
(:func:`build_push`) and judges its answer (:func:`judge_push_answer`).
"""

from ._accountxml import account_xml, DEFAULT_ACCOUNT_XML, removal_account_xml
from ._client import (DEFAULT_BACKOFF, DEFAULT_USER_AGENT, TRANSITIONS, AppEvent, AppModel,
                      AppState, Sent, app_variables, judge_response, render_request,
                      response_problem, substitute, to_http_bytes, transition)
from ._defaults import DEFAULT_SHAPES, DefaultShapes
from ._errors import (AppModelError, AuthenticationFailed, ConfigurationError, InvalidReport,
                      MethodNotAllowed, PushReportError, RequestTooLarge, StorageUnavailable)
from ._errors import (AuthenticationRequired, AuthenticationUnavailable, ServiceUnavailable,
                      TooManyRequests)
from ._gateway import (DEFAULT_GATEWAY_URL, PUSH_VERBS, InvalidPush, OutcomeKind, PushOutcome,
                       PushTarget, PushVerb, build_push, default_verb, judge_push_answer,
                       parse_retry_after, push_targets, retry_delay)
from ._fields import DEFAULT_KEYS, PASSWORD_VARIABLE, REPORT_FIELDS, VARIABLE_FIELDS
from ._grammar import is_unknown
from ._lifecycle import (DURATION_UNITS, TOKEN_OWNERS, claimed_tokens, format_duration,
                         owners_to_forget, parse_duration, prune_cutoff, prune_due)
from ._merge import merge, without_token
from ._report import DEFAULT_MAX_BODY, MAX_TARGET, Shapes, parse_request
from ._removal import (DEFAULT_REMOVAL_ACCOUNT_XML, DEFAULT_REMOVAL_SHAPES, REMOVAL_PREFIX,
                       DefaultRemovalShapes, Removal, default_removal_template, parse_removal,
                       removal_template, shapes_overlap)
from ._templates import METHODS, Template, xml_unescape
from ._values import (REGISTRATION_FIELDS, TOKEN_FIELDS, Purpose, Registration, Report,
                      Request, Secret, TokenPair, format_time, parse_time)

__all__ = [
    "DEFAULT_BACKOFF", "TRANSITIONS", "AppEvent", "AppModel", "AppModelError", "AppState",
    "Sent", "app_variables", "judge_response", "response_problem", "to_http_bytes",
    "transition",
    "DEFAULT_ACCOUNT_XML", "DEFAULT_KEYS", "DEFAULT_MAX_BODY", "DEFAULT_SHAPES",
    "DEFAULT_USER_AGENT", "MAX_TARGET", "METHODS", "PASSWORD_VARIABLE",
    "REGISTRATION_FIELDS", "REPORT_FIELDS", "TOKEN_FIELDS", "VARIABLE_FIELDS",
    "AuthenticationFailed", "ConfigurationError", "DefaultShapes", "InvalidReport",
    "MethodNotAllowed", "PushReportError", "Purpose", "Registration", "Report", "Request",
    "RequestTooLarge", "Secret", "Shapes", "StorageUnavailable", "Template", "TokenPair",
    "account_xml", "format_time", "is_unknown", "merge", "parse_request", "parse_time",
    "render_request", "substitute", "xml_unescape",
    "AuthenticationRequired", "TooManyRequests", "AuthenticationUnavailable",
    "ServiceUnavailable",
    "DEFAULT_REMOVAL_ACCOUNT_XML", "DEFAULT_REMOVAL_SHAPES", "REMOVAL_PREFIX",
    "DefaultRemovalShapes", "Removal", "default_removal_template", "parse_removal",
    "removal_account_xml", "removal_template", "shapes_overlap",
    "without_token",
    "DURATION_UNITS", "TOKEN_OWNERS", "claimed_tokens", "format_duration", "owners_to_forget",
    "parse_duration", "prune_cutoff", "prune_due",
    "DEFAULT_GATEWAY_URL", "PUSH_VERBS", "InvalidPush", "OutcomeKind", "PushOutcome",
    "PushTarget", "PushVerb", "build_push", "default_verb", "judge_push_answer",
    "parse_retry_after", "push_targets", "retry_delay",
]
