"""How a report changes what is stored, field by field: the merge policies.

Each field of :class:`~pushreport_core.Registration` declares its policy where it is
declared (``metadata``); :data:`~pushreport_core.MERGE_POLICY` is that table, read from
the class. :func:`~pushreport_core.merge` is a loop over it, and every SQL backend builds
its ``INSERT … ON CONFLICT DO UPDATE`` from it through a small mapping of its own, one
SQL expression per policy: the rule is written once, here, and carried out the same way
in Python and in each database.
"""

from __future__ import annotations

import enum
from typing import Any, Mapping

__all__ = ["Policy", "POLICY_KEY", "merged"]

#: The ``attrs`` metadata key under which a field names its :class:`Policy`.
POLICY_KEY = "pushreport.merge"


class Policy(enum.Enum):
    """What a stored field becomes when a report for its selector arrives at ``now``."""

    #: The registration's key (``selector``): the report's; a report of another key is
    #: not merged into this registration.
    KEY = "key"
    #: "On iOS, there is sometimes a delay getting the pushTokenOther which results in
    #: the web service being called with a null value for pushTokenOther." So a value the
    #: report does not know (``None``: the parser turns every spelling of "unknown" into
    #: it) never erases a stored one; a known value replaces it.
    KEEP_KNOWN = "keep-known"
    #: The report's extra fields are added to the stored ones, replacing those of the
    #: same name; a stored name the report lacks stays.
    MERGE_EXTRA = "merge-extra"
    #: ``now`` for a new registration, then the earlier of the stored value and ``now``
    #: (reports may be applied out of order).
    EARLIEST = "earliest"
    #: ``now`` for a new registration, then the later of the stored value and ``now``.
    LATEST = "latest"
    #: 1 for a new registration, then one more per report.
    COUNT = "count"

    @property
    def reported(self) -> bool:
        """Whether the value comes from the report (else from ``now`` or the count)."""
        return self in _REPORTED


_REPORTED = frozenset({Policy.KEY, Policy.KEEP_KNOWN, Policy.MERGE_EXTRA})


def merged(policy: Policy) -> Mapping[str, Any]:
    """The ``attrs`` field metadata that gives a field *policy*."""
    return {POLICY_KEY: policy}
