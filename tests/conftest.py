"""Shared by every suite: hypothesis profiles, nothing else.

``ci`` is bounded and derandomized (the same examples on every run, failures print a
reproduction blob); ``long`` is for a deliberate soak. ``HYPOTHESIS_PROFILE`` overrides.
"""

import os

from hypothesis import settings

# Hypothesis loads its own "ci" profile whenever a CI variable exists (even CI=false), and
# a profile without a parent inherits whatever is loaded: start each from the defaults.
_DEFAULT = settings.get_profile("default")
settings.register_profile(
    "ci", _DEFAULT, derandomize=True, max_examples=100, deadline=None, print_blob=True
)
settings.register_profile("dev", _DEFAULT)
settings.register_profile("long", _DEFAULT, max_examples=5000, deadline=None)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE")
    or ("ci" if os.environ.get("CI", "").lower() == "true" else "dev")
)
