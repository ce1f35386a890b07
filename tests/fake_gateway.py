"""A fake Acrobits push gateway on loopback: records every request, answers per token.

Each device token may have a plan: the answers to give, in order (the last one repeats);
a token without a plan is answered ``200 {"code": 200}``. An answer is
``(status, body)`` or ``(status, body, headers)``; ``"hang"`` waits longer than any test's
client timeout before answering (bounded, so the server always stops); ``"drop"`` closes
the connection without an answer; ``"short"`` sends less body than announced.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator, Sequence, Union

Answer = Union[tuple[int, bytes], tuple[int, bytes, dict[str, str]], str]

OK = (200, b'{"code":200,"message":"OK"}')
GONE = (404, b'{"code":404,"message":"Invalid token"}')
BUSY = (503, b"busy", {"Retry-After": "0"})
HANG_SECONDS = 3.0


class FakeGateway:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.plans: dict[str, list[Answer]] = {}
        self.lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                with gateway.lock:
                    gateway.requests.append(
                        {
                            "path": self.path,
                            "content_type": self.headers.get("Content-Type"),
                            "raw": raw,
                            "json": body,
                        }
                    )
                    token = body.get("DeviceToken") if isinstance(body, dict) else None
                    plan = gateway.plans.get(token or "", [])
                    answer: Answer = plan.pop(0) if len(plan) > 1 else (plan[0] if plan else OK)
                if answer == "hang":
                    time.sleep(HANG_SECONDS)
                    answer = OK
                if answer == "drop":  # close the connection without an answer
                    self.close_connection = True
                    return
                if answer == "short":  # a body shorter than its Content-Length
                    self.send_response(200)
                    self.send_header("Content-Length", "100")
                    self.end_headers()
                    self.wfile.write(b'{"code":')
                    self.close_connection = True
                    return
                assert not isinstance(answer, str)
                status, data = answer[0], answer[1]
                headers = answer[2] if len(answer) > 2 else {}  # type: ignore[misc]
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left: that is what "hang" is for

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/pnm2/send"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def plan(self, token: str, answers: Sequence[Answer]) -> None:
        with self.lock:
            self.plans[token] = list(answers)

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r["json"] for r in self.requests]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def running_gateway() -> Iterator[FakeGateway]:
    """For a fixture: ``yield from running_gateway()``; stopped afterwards."""
    g = FakeGateway()
    try:
        yield g
    finally:
        g.stop()
