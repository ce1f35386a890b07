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


def wait_for_child(pid: int, seconds: float = 60.0) -> int:
    """The exit code of the forked child *pid*, waited for at most *seconds*; a child
    still running then (deadlocked on a lock another thread held at the fork) is
    killed and reported, so that the test fails instead of hanging the whole run."""
    import signal
    import time

    deadline = time.monotonic() + seconds
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"child {pid} still running after {seconds} s: killed")
        time.sleep(0.01)
