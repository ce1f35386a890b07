"""Patterns of the Push Token Reporter, each compiled once.

Each pattern quotes the line of the specification (``push_token_reporter.txt``) or of the
notes on the Acrobits services that it implements.
"""

from __future__ import annotations

import re

__all__ = [
    "PLACEHOLDER",
    "SELECTOR",
    "TOKEN",
    "APP_ID",
    "CONTROL",
    "SURROGATE",
    "BAD_TEXT",
    "MAX_SELECTOR",
    "MAX_TOKEN",
    "MIN_TOKEN",
    "MAX_APP_ID",
    "MAX_USERNAME",
    "MAX_EXTRA_VALUE",
    "MAX_EXTRA_NAME",
    "MAX_EXTRA_FIELDS",
    "is_unknown",
]

# "Parameter templates ... can use any variables from Global parameters and Account
# parameters scopes": %installid%, %account[username]%, %account[cloud_username]%, and the
# service's own %selector%, %pushToken%, ... A name starts with a letter or "_" and is not
# two hex digits, so that literal percent-escapes such as "%2F" or "%C3%A9" in a template
# are never taken for a placeholder.
PLACEHOLDER = re.compile(
    r"%(?![0-9A-Fa-f]{2}%)([A-Za-z_][A-Za-z0-9_.\-]*(?:\[[A-Za-z0-9_.\-]+\])?)%"
)

# "The value is a SHA1 hash with a suffix.
#  Example: 12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"
SELECTOR = re.compile(r"[0-9A-Fa-f]{40}:[0-9A-Fa-f]{1,40}")
MAX_SELECTOR = 81

# "The value of this parameter will be a base64 - encoded string of variable length."
# Standard or URL-safe alphabet, padding optional: the spec's own Android example is 63
# characters long, unpadded. APNs tokens rendered as hex are a subset of the alphabet.
TOKEN = re.compile(r"[A-Za-z0-9+/_\-]+={0,2}")
MIN_TOKEN = 8
MAX_TOKEN = 4096

# App ids are reverse-DNS identifiers: "com.cloudsoftphone.app",
# "com.cloudsoftphone.app.pushkit" (iOS bundle ids allow "-", Android packages "_").
APP_ID = re.compile(r"[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)+")
MAX_APP_ID = 255

# Usernames and extra values are free text, but never control characters.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# A JSON body may spell a lone surrogate ("\ud800"): not UTF-8, so it cannot be stored,
# logged or compared as bytes.
SURROGATE = re.compile("[\ud800-\udfff]")
# Either of the two, in one scan: the common (valid) case pays for one search only.
BAD_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
MAX_USERNAME = 256
MAX_EXTRA_NAME = 64
MAX_EXTRA_VALUE = 1024
MAX_EXTRA_FIELDS = 32

# "On iOS, there is sometimes a delay getting the pushTokenOther which results in the web
# service being called with a null value for pushTokenOther." What an unavailable value
# becomes is unconfirmed: an empty string (seen in the field), "(null)", "null", or the
# placeholder left unsubstituted. All of them mean "not known yet".
_UNKNOWN = frozenset({"", "null", "(null)", "nil", "<null>"})
_LONE_PLACEHOLDER = re.compile(r"%[A-Za-z_][A-Za-z0-9_.\-]*(?:\[[A-Za-z0-9_.\-]+\])?%")


_MAX_UNKNOWN = max(map(len, _UNKNOWN))


def is_unknown(value: str | None) -> bool:
    """True when *value* means "the app did not know this yet"."""
    if value is None:
        return True
    v = value.strip()
    # Cheap tests first: this runs for every value of every report.
    if len(v) <= _MAX_UNKNOWN and v.lower() in _UNKNOWN:
        return True
    return v[:1] == "%" and _LONE_PLACEHOLDER.fullmatch(v) is not None
