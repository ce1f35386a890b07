"""A coverage-guided fuzz target (atheris, libFuzzer) for ``pushreport_core.parse_request``.

Each input picks a shape (the default shapes or one of the conformance kit's templates of
every kind), a method and a content type, and splits the rest into a request target and
a body. ``parse_request`` must return a valid report or raise a ``PushReportError``
(a 4xx); any other exception, an invalid report, or an input that runs longer than
libFuzzer's ``-timeout`` is a crash, written to ``crash-<sha1>`` for reproduction.

    python fuzz/fuzz_parse.py --seeds fuzz/corpus        # write the seed corpus
    python fuzz/fuzz_parse.py -dict=fuzz/parse.dict -max_total_time=600 fuzz/corpus
    python fuzz/fuzz_parse.py crash-0123abcd...          # replay one input

``pip install -e '.[fuzz]'`` installs atheris (wheels: CPython 3.11-3.14 on x86_64
Linux). See docs/fuzzing.md.

Input layout (libFuzzer's FuzzedDataProvider takes numbers from the end)::

    target bytes | body bytes | len(target) lo, hi | content type | method | shape
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import atheris

with atheris.instrument_imports(include=["pushreport_core"]):
    from pushreport_core import (
        PushReportError,
        Report,
        Request,
        Template,
        app_variables,
        parse_request,
        render_request,
    )
    from pushreport_core._grammar import APP_ID, BAD_TEXT, SELECTOR, TOKEN
    from pushreport_core.testing import ROUNDTRIP_TEMPLATES, SPEC_REQUESTS, SPEC_VALUES

#: ``None`` is the default shapes; then one template of every kind the core supports.
SHAPE_NAMES: tuple[str, ...] = ("default", *ROUNDTRIP_TEMPLATES)
SHAPES: tuple[Template | None, ...] = (
    None,
    *(Template.parse(**xml) for xml in ROUNDTRIP_TEMPLATES.values()),
)
METHODS = ("GET", "POST", "PUT", "HEAD", "DELETE", "PATCH", "get", "")
CONTENT_TYPES: tuple[str | None, ...] = (
    None,
    "",
    "application/json",
    "application/x-www-form-urlencoded",
    "text/plain",
    "application/xml",
    "application/json; charset=utf-8",
    "text/plain; charset=utf-8",
    "APPLICATION/X-WWW-FORM-URLENCODED",
    "multipart/form-data; boundary=x",
)


def request_from(data: bytes) -> tuple[int, Request]:
    """The shape index and the request that fuzz input *data* stands for."""
    fdp = atheris.FuzzedDataProvider(data)
    shape = fdp.ConsumeIntInRange(0, len(SHAPES) - 1)
    method = METHODS[fdp.ConsumeIntInRange(0, len(METHODS) - 1)]
    content_type = CONTENT_TYPES[fdp.ConsumeIntInRange(0, len(CONTENT_TYPES) - 1)]
    target_len = fdp.ConsumeIntInRange(0, 0xFFFF)
    # WSGI hands the target over as latin-1 text (PEP 3333), so every byte is a char.
    target = fdp.ConsumeBytes(target_len).decode("latin-1")
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    return shape, Request(
        method=method,
        target=target,
        body=body,
        content_type=content_type,
        user_agent="CloudSoftphone/1.5.6",
    )


def seed_for(shape: int, request: Request) -> bytes:
    """The fuzz input for which :func:`request_from` gives back *shape* and *request*
    (whose method and content type must be among ``METHODS`` and ``CONTENT_TYPES``)."""
    target = request.target.encode("latin-1")
    return (
        target
        + request.body
        + bytes(
            [
                len(target) & 0xFF,
                len(target) >> 8,
                CONTENT_TYPES.index(request.content_type),
                METHODS.index(request.method),
                shape,
            ]
        )
    )


def seeds() -> dict[str, bytes]:
    """The seed corpus: the spec's two requests under the default shapes, and the app's
    request for every template with the spec's values."""
    out = {
        f"spec-{name.replace(' ', '-').lower()}": seed_for(0, request)
        for name, request in SPEC_REQUESTS.items()
    }
    variables = app_variables(**SPEC_VALUES, extra={"installid": "install-1"})
    for index, (name, template) in enumerate(zip(SHAPE_NAMES, SHAPES)):
        if template is None:
            continue
        request = render_request(template, variables)
        out[f"template-{name}"] = seed_for(
            index,
            Request(
                method=request.method,
                target=request.target,
                body=request.body,
                content_type=request.content_type,
                user_agent=request.user_agent,
            ),
        )
    return out


def check_report(report: Report) -> None:
    """A report that comes back is a valid one: what the property tests also assert."""
    if not isinstance(report, Report):
        raise AssertionError(f"parse_request returned {type(report).__name__}")
    if not SELECTOR.fullmatch(report.selector):
        raise AssertionError(f"invalid selector {report.selector!r}")
    for token in (report.token_calls, report.token_msgs):
        if token is not None and not (TOKEN.fullmatch(token) and len(token) >= 8):
            raise AssertionError(f"invalid token {token!r}")
    for app_id in (report.appid_calls, report.appid_msgs):
        if app_id is not None and not APP_ID.fullmatch(app_id):
            raise AssertionError(f"invalid app id {app_id!r}")
    for text in (report.username or "", *report.extra, *report.extra.values()):
        if BAD_TEXT.search(text):
            raise AssertionError(f"control character or surrogate in {text!r}")


def TestOneInput(data: bytes) -> None:  # noqa: N802 - the name libFuzzer's harness uses
    shape, request = request_from(data)
    try:
        report = parse_request(request, SHAPES[shape])
    except PushReportError as e:
        if not 400 <= e.error_status_hint < 500:
            raise AssertionError(f"error with status hint {e.error_status_hint}: {e!r}") from e
        return
    check_report(report)


def main(argv: Sequence[str]) -> None:
    if len(argv) == 3 and argv[1] == "--seeds":
        folder = Path(argv[2])
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in seeds().items():
            (folder / name).write_bytes(data)
        print(f"wrote {len(seeds())} seeds to {folder}")
        return
    atheris.Setup(list(argv), TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
