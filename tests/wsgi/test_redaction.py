"""Redaction is derived from the parser: whatever it reads as the account password or
as the configured shared secret is masked in every log line, wherever the value sits
and however its name and value are percent-encoded (issue 14, item 1)."""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote, unquote

import attrs
from hypothesis import event, given
from hypothesis import strategies as st
from werkzeug.test import Client

from pushreport._config import AuthConfig, StorageConfig
from pushreport._logs import TEXT_FORMAT, JsonFormatter
from pushreport_core import (
    PASSWORD_VARIABLE,
    Request,
    StorageUnavailable,
    Template,
    render_request,
)
from pushreport_core.testing import strategies as prs
from pushreport_wsgi import Config, Receiver, create_app, hookimpl, make_plugin_manager

from .conftest import SELECTOR, TOKEN_MSGS, make_config

# Sixteen random alphanumerics each: they cannot turn up in a log line by chance.
PASSWORD = "Hq7PwZr2Lk9xVb4T"
SECRET = "Sc3tN8vQe1mYw6Rj"
SECRET_VARIABLE = "account[pushSecret]"


class PasswordCheck:
    """Accepts a report only when the parser read the right password: a 200 proves that
    the password was read, so its absence from the logs is the redaction's doing."""

    def __init__(self, password: str = PASSWORD) -> None:
        self.password = password

    @hookimpl
    def pushreport_authenticate(self, report: Any) -> bool:
        return report.password is not None and report.password.reveal() == self.password


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def captured_logs() -> Iterator[list[logging.LogRecord]]:
    """Every record of every logger (the access log on, the ``pushreport`` logger at
    DEBUG), without caplog: hypothesis runs many examples in one test."""
    handler = _Records()
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("pushreport", "pushreport.access")}
    root.addHandler(handler)
    logging.getLogger("pushreport").setLevel(logging.DEBUG)
    logging.getLogger("pushreport.access").setLevel(logging.INFO)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def log_lines(records: list[logging.LogRecord]) -> list[str]:
    """Each record as ``pushreport serve`` writes it, in text and in JSON."""
    text = logging.Formatter(TEXT_FORMAT)
    lines = []
    for record in records:
        lines.append(text.format(record))
        line = JsonFormatter().format(record)
        json.loads(line)
        lines.append(line)
    return lines


def assert_not_logged(lines: list[str], *values: str) -> None:
    for line in lines:
        for value in values:
            # Decoded too: a value logged percent-encoded is logged all the same.
            assert value not in line and value not in unquote(line), (value, line)


def secret_config(tmp_path: Path, secret_field: str, **reporter: Any) -> Config:
    return attrs.evolve(
        make_config(tmp_path, **reporter),
        auth=AuthConfig(methods=("secret",), secret=SECRET, secret_field=secret_field),
    )


def access_targets(records: list[logging.LogRecord]) -> list[str]:
    return [r.target for r in records if r.name == "pushreport.access"]  # type: ignore[attr-defined]


# -- the two reproductions of the issue, verbatim ------------------------------------------


def test_path_tail_password_and_secret_are_masked(tmp_path: Path) -> None:
    # The path shape's "&key=value" tail was only token-shortened.
    app = create_app(
        receiver=Receiver.from_config(
            secret_config(tmp_path, "pushsecret"),
            plugin_manager=make_plugin_manager(plugins=[PasswordCheck("Hunter2PW")]),
        )
    )
    target = (
        f"/pushToken/alice/{SELECTOR}/{TOKEN_MSGS}"
        f"&appid=com.x&password=Hunter2PW&pushsecret={SECRET}"
    )
    with captured_logs() as records:
        assert Client(app).get(target).status_code == 200
    assert access_targets(records) == [
        f"/pushToken/alice/{SELECTOR}/{TOKEN_MSGS[:8]}…&appid=com.x&password=***&pushsecret=***"
    ]
    assert_not_logged(log_lines(records), "Hunter2PW", SECRET)
    app.close()


def test_percent_encoded_names_are_masked(tmp_path: Path) -> None:
    # The parser decodes the key names and uses the values; the redactor compared the
    # raw names.
    app = create_app(
        receiver=Receiver.from_config(
            secret_config(tmp_path, "pushsecret"),
            plugin_manager=make_plugin_manager(plugins=[PasswordCheck("Hunter2PW")]),
        )
    )
    query = f"username=alice&selector={SELECTOR}&token_msgs={TOKEN_MSGS}&appid_msgs=com.x"
    target = f"/token/?{query}&push%73ecret={SECRET}&pass%77ord=Hunter2PW"
    with captured_logs() as records:
        assert Client(app).get(target).status_code == 200
        # Refused (400, the selector is bad): masked all the same.
        assert Client(app).get(target.replace(SELECTOR, "bad")).status_code == 400
    shown = f"/token/?username=alice&selector={SELECTOR}&token_msgs={TOKEN_MSGS[:8]}…"
    assert access_targets(records) == [
        f"{shown}&appid_msgs=com.x&push%73ecret=***&pass%77ord=***",
        f"{shown.replace(SELECTOR, 'bad')}&appid_msgs=com.x&push%73ecret=***&pass%77ord=***",
    ]
    assert_not_logged(log_lines(records), "Hunter2PW", SECRET)
    app.close()


def test_a_target_that_does_not_parse_is_masked_by_decoded_names(tmp_path: Path) -> None:
    url = (
        "https://e.com/r/?s=%selector%&k=%account[pushSecret]%&t=%pushToken%"
        "&p=%account[password]%&u=%account[username]%"
    )
    app = create_app(
        receiver=Receiver.from_config(
            secret_config(tmp_path, SECRET_VARIABLE, url=url),
            plugin_manager=make_plugin_manager(plugins=[PasswordCheck()]),
        )
    )
    good = f"/r/?s={SELECTOR}&%4B={SECRET}&t={TOKEN_MSGS}&P={PASSWORD}&u=alice"
    with captured_logs() as records:
        assert Client(app).get(good).status_code == 200
        # A name that does not decode stops the parser before the secret and the
        # password; a repeated name, a value that does not decode: all 400.
        for bad in (
            f"/r/?%FF=1&s={SELECTOR}&k={SECRET}&t={TOKEN_MSGS}&p={PASSWORD}&u=alice",
            f"/r/?s={SELECTOR}&s=x&%6b={SECRET}&t={TOKEN_MSGS}&p={PASSWORD}&u=alice",
            f"/r/?s={SELECTOR}&k={SECRET}&t=%FF&p={PASSWORD}&u=alice",
            f"/r/?s={SELECTOR}&k={SECRET}&t={TOKEN_MSGS}&p={PASSWORD}",
        ):
            assert Client(app).get(bad).status_code == 400
    assert access_targets(records) == [
        f"/r/?s={SELECTOR}&%4B=***&t={TOKEN_MSGS[:8]}…&P=***&u=alice",
        f"/r/?%FF=***&s={SELECTOR}&k=***&t={TOKEN_MSGS[:8]}…&p=***&u=alice",
        f"/r/?s={SELECTOR}&s=x&%6b=***&t={TOKEN_MSGS[:8]}…&p=***&u=alice",
        f"/r/?s={SELECTOR}&k=***&t=%FF&p=***&u=alice",
        f"/r/?s={SELECTOR}&k=***&t={TOKEN_MSGS[:8]}…&p=***",
    ]
    assert_not_logged(log_lines(records), PASSWORD, SECRET)
    app.close()


# -- error log lines -----------------------------------------------------------------------


class Exploding:
    """A backend whose errors quote everything it was given: what reaches a backend must
    hold neither the password nor the secret."""

    def __init__(self, unavailable: bool) -> None:
        self.unavailable = unavailable

    def get(self, selector: str) -> None:
        return None  # nothing stored: the identified user may write the selector

    def upsert(self, report: Any, *, now: Any) -> Any:
        text = f"cannot store {report!r} {report.extra!r} {report.stored_fields()!r}"
        if self.unavailable:
            raise StorageUnavailable(text)
        raise RuntimeError(text)

    def close(self) -> None:
        pass


class ExplodingPlugin:
    @hookimpl
    def pushreport_register_storage(self, register: Any) -> None:
        register("unavailable", lambda options, context: Exploding(True))
        register("exploding", lambda options, context: Exploding(False))


def test_error_lines_carry_neither_the_password_nor_the_secret(tmp_path: Path) -> None:
    query = f"username=alice&selector={SELECTOR}&token_msgs={TOKEN_MSGS}"
    target = f"/token/?{query}&Push%53ecret={SECRET}&PASS%57ORD={PASSWORD}"
    for backend in ("unavailable", "exploding"):
        config = attrs.evolve(
            secret_config(tmp_path, "pushSecret"), storage=StorageConfig(backends=(backend,))
        )
        pm = make_plugin_manager(plugins=[PasswordCheck(), ExplodingPlugin()])
        app = create_app(receiver=Receiver.from_config(config, plugin_manager=pm))
        with captured_logs() as records:
            assert Client(app).get(target).status_code == 503
        errors = [r for r in records if r.name == "pushreport"]
        # The storage failure is logged (a warning, or a traceback), and quotes the report.
        assert errors and any(selector_in(r) for r in errors), backend
        assert_not_logged(log_lines(records), PASSWORD, SECRET)
        app.close()


def selector_in(record: logging.LogRecord) -> bool:
    return SELECTOR in log_lines([record])[0]


# -- the property: any request, any shape, any position, any encoding ------------------------

DEFAULT_KINDS = ("query", "path", "form", "json")


def _encoded(draw: Any, text: str, *, case: bool = False) -> str:
    """*text* with any of its characters percent-encoded (upper or lower hex), and in any
    case when *case* (names are compared lower-cased)."""
    out = []
    for ch in text:
        if case and ch.isalpha() and draw(st.booleans()):
            ch = ch.swapcase()
        if ch.isalnum() and draw(st.booleans()):
            escape = f"%{ord(ch):02X}"
            out.append(escape.lower() if draw(st.booleans()) else escape)
        else:
            out.append(quote(ch, safe=""))
    return "".join(out)


def _form_value(value: str) -> str:
    return quote(value, safe="")


#: A selector the parser refuses once it has read everything else (400).
BAD_SELECTOR = "not-a-selector"


@st.composite
def default_requests(draw: Any, selector: str | None = None) -> Request:
    """A request of the default shapes with the password and the secret anywhere the
    shape reads them: the query, the path's ``&`` tail, a form or JSON body."""
    kind = draw(st.sampled_from(DEFAULT_KINDS))
    values = draw(prs.registration_values)
    username = draw(prs.usernames)
    token_msgs = values["token_msgs"] or draw(prs.tokens())
    places = ["query"]
    if kind == "path":
        places.append("tail")
    elif kind in ("form", "json"):
        places.append("body")
    where = {"password": draw(st.sampled_from(places)), "secret": draw(st.sampled_from(places))}
    raw = {
        "password": (draw(st.sampled_from(("password", PASSWORD_VARIABLE))), PASSWORD),
        "secret": ("pushSecret", SECRET),
    }

    def encoded_pair(name: str) -> str:
        key, value = raw[name]
        return f"{_encoded(draw, key, case=True)}={_encoded(draw, value)}"

    fields = {
        "token_calls": values["token_calls"],
        "appid_calls": values["appid_calls"],
        "appid_msgs": values["appid_msgs"],
    }
    query = [f"{k}={_form_value(v)}" for k, v in fields.items() if v is not None]
    query += [encoded_pair(n) for n in raw if where[n] == "query"]
    selector = _form_value(selector or values["selector"])
    body = b""
    content_type = None
    method = "GET"
    if kind == "path":
        tail = "".join(f"&{encoded_pair(n)}" for n in raw if where[n] == "tail")
        token = quote(token_msgs, safe="")
        path = f"/pushToken/{quote(username, safe='')}/{selector}/{token}{tail}"
    else:
        path = "/token/"
        query.append(f"selector={selector}")
        query.append(f"username={_form_value(username)}&token_msgs={_form_value(token_msgs)}")
        if kind in ("form", "json"):
            method = "POST"
            in_body = {raw[n][0]: raw[n][1] for n in raw if where[n] == "body"}
            if kind == "form":
                body = "&".join(f"{quote(k)}={quote(v)}" for k, v in in_body.items()).encode()
                content_type = "application/x-www-form-urlencoded"
            else:
                body = json.dumps(in_body).encode()
                content_type = "application/json"
    draw(st.randoms(use_true_random=False)).shuffle(query)
    target = f"{path}?{'&'.join(query)}" if query else path
    return Request(method=method, target=target, body=body, content_type=content_type)


def _with_item(text: str, item: str, sep: str) -> str:
    if not text:
        return item
    return f"{text}{'&' if sep in text else sep}{item}"


@st.composite
def template_requests(draw: Any, selector: str | None = None) -> tuple[Template, Request]:
    """A template of any kind carrying the username, the password and the secret
    (wherever the strategy put them, else in the query; the secret in a form body
    sometimes), and the request the app sends for it, with the parameter names and the
    two values percent-encoded any way."""
    t = draw(prs.templates())
    url, post_data = t.url, t.post_data
    if "account[username]" not in t.variables:
        url = _with_item(url, "u9=%account[username]%", "?")
    if PASSWORD_VARIABLE not in t.variables:
        url = _with_item(url, "p9=%account[password]%", "?")
    if post_data and not t.content_type and draw(st.booleans()):  # a form body
        post_data = _with_item(post_data, f"s9=%{SECRET_VARIABLE}%", "&")
    else:
        url = _with_item(url, f"s9=%{SECRET_VARIABLE}%", "?")
    template = Template.parse(
        url=url, post_data=post_data, content_type=t.content_type, method=t.method
    )
    values = dict(draw(prs.registration_values))
    values["password"] = PASSWORD
    values["username"] = draw(prs.usernames)
    if selector is not None:
        values["selector"] = selector
    variables = prs.variables_for(values)
    variables[SECRET_VARIABLE] = SECRET
    request = render_request(template, variables)
    path, qmark, query = request.target.partition("?")
    items = []
    for item in query.split("&") if qmark else ():
        key, eq, value = item.partition("=")
        items.append(f"{_encoded(draw, unquote(key), case=True)}{eq}{value}")
    target = f"{path}{qmark}{'&'.join(items)}"
    for value in (PASSWORD, SECRET):
        target = target.replace(value, _encoded(draw, value))
    return template, attrs.evolve(request, target=target)


@given(data=st.data())
def test_no_log_line_carries_the_password_or_the_secret(data: Any) -> None:
    how = data.draw(st.sampled_from(("as sent", "bad selector", "bad name", "noise")))
    selector = BAD_SELECTOR if how == "bad selector" else None
    template: Template | None = None
    if data.draw(st.booleans(), label="default shapes"):
        request = data.draw(default_requests(selector))
    else:
        template, request = data.draw(template_requests(selector))
    expected: tuple[int, ...] = {"as sent": (200,), "bad selector": (400,)}.get(how, (200, 400))
    path, qmark, query = request.target.partition("?")
    if how == "bad name":
        # A parameter name that does not decode: the parser stops there.
        query = f"%FF=1&{query}" if query else "%FF=1"
    elif how == "noise":
        # Well-known names, where a template reads no such parameter: masked too.
        noise = f"pass%77ord={PASSWORD}&SECRET={_encoded(data.draw, SECRET)}"
        query = f"{query}&{noise}" if query else noise
    if query:
        request = attrs.evolve(request, target=f"{path}?{query}")
    reporter: dict[str, Any] = {}
    secret_field = "pushSecret"
    if template is not None:
        reporter = dict(
            url=template.url,
            post_data=template.post_data,
            content_type=template.content_type,
            method=template.method,
        )
        secret_field = SECRET_VARIABLE
    with tempfile.TemporaryDirectory() as tmp:
        receiver = Receiver.from_config(
            secret_config(Path(tmp), secret_field, **reporter),
            plugin_manager=make_plugin_manager(plugins=[PasswordCheck()]),
        )
        app = create_app(receiver=receiver)
        try:
            with captured_logs() as records:
                response = Client(app).open(
                    request.target,
                    method=request.method,
                    data=request.body,
                    content_type=request.content_type,
                )
        finally:
            app.close()
    assert response.status_code in expected, (response.status_code, response.data, request)
    event(f"{'default' if template is None else 'template'} {how}: {response.status_code}")
    assert access_targets(records), "the request was not logged"
    assert_not_logged(log_lines(records), PASSWORD, SECRET)
