"""``pushreport``'s last resort: whatever fails, one ``pushreport: …`` line, never a
traceback (issue 14, item 13)."""

from __future__ import annotations

import pytest

from pushreport import _cli
from pushreport._cli import main


@pytest.mark.parametrize(
    ("error", "status", "line"),
    [
        (
            RuntimeError("postgresql://user:hunter2@db/x"),
            70,
            "pushreport: stats failed: internal error (RuntimeError); please report it",
        ),
        (
            PermissionError(13, "Permission denied", "/srv/x"),
            1,
            "pushreport: Permission denied: /srv/x",
        ),
        (KeyboardInterrupt(), 130, "pushreport: stats: interrupted"),
    ],
)
def test_anything_else_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: BaseException,
    status: int,
    line: str,
) -> None:
    def fail(args: object) -> int:
        raise error

    monkeypatch.setattr(_cli, "_stats", fail)
    assert main(["stats"]) == status
    out, err = capsys.readouterr()
    assert (out, err) == ("", line + "\n")
    assert "hunter2" not in err  # an unexpected error's message may quote a DSN


def test_a_usage_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["prune", "--db", "x.sqlite3"])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "pushreport: prune: the following arguments are required: --older-than "
        "(see pushreport prune --help)\n"
    )
    with pytest.raises(SystemExit):
        main(["nonsense"])
    err = capsys.readouterr().err
    assert err.startswith("pushreport: argument COMMAND: invalid choice: 'nonsense'")
    assert err.count("\n") == 1
