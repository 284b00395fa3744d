"""`clearance mcp-proxy` on the wire: raw JSON-RPC, hostile or malformed, over stdio and streamable HTTP.

The proxy relays messages past the MCP SDK's session layers, so what it parses is what it
decides on and what it forwards: these tests write bytes to a real proxy process (in front of a
real upstream) and read what it answers.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("mcp")

from clearance._store import EventFilter  # noqa: E402
from clearance._store._events import query  # noqa: E402

from ..server.conftest import _free_port  # noqa: E402
from . import test_mcp  # noqa: E402
from .test_mcp import UPSTREAM, _wait_for_port, db_of  # noqa: E402

proxy_env = test_mcp.proxy_env  # the fixture: configured by environment, on tmp_path's store

PROXY = [sys.executable, "-m", "clearance.cli", "mcp-proxy"]
INIT = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}


class Raw:
    """A proxy process spoken to line by line over its stdin and stdout."""

    def __init__(self, ledger: Path, env: dict[str, str], argv: list[str] | None = None) -> None:
        argv = argv or [*PROXY, "--upstream", f"refunds={sys.executable} {UPSTREAM} {ledger}"]
        self.process = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def send(self, line: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + b"\n")
        self.process.stdin.flush()

    def receive(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, "the proxy closed its output"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def ask(self, message: Any) -> dict[str, Any]:
        self.send(json.dumps(message).encode())
        return self.receive()

    def close(self) -> int:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        code = self.process.wait(30)
        self.process.stdout.close()
        return code


@pytest.fixture
def raw(tmp_path: Path, proxy_env: dict[str, str]) -> Iterator[tuple[Raw, Path]]:
    ledger = tmp_path / "ledger.txt"
    ledger.touch()
    proxy = Raw(ledger, proxy_env)
    try:
        answer = proxy.ask(INIT)
        assert answer["result"]["protocolVersion"] == "2025-06-18"
        proxy.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
        yield proxy, ledger
    finally:
        if proxy.process.poll() is None:
            proxy.process.kill()
            proxy.process.wait(10)
        for stream in (proxy.process.stdin, proxy.process.stdout):
            if stream is not None:
                stream.close()


def call(request_id: int, name: Any, arguments: Any) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }


def decided(env: dict[str, str]) -> list[dict[str, Any]]:
    return [e.body for e in query(db_of(env), EventFilter(kind="tool_call.decided"))]


def test_hostile_lines_are_answered_with_errors_and_the_proxy_reads_on(
    raw: tuple[Raw, Path], proxy_env: dict[str, str]
) -> None:
    proxy, ledger = raw
    deep = b"[" * 200_000 + b"]" * 200_000
    cases: list[tuple[bytes, int]] = [
        (b"{not json", -32700),
        (b"\xff\xfe{}", -32700),  # not UTF-8
        (deep, -32700),  # nested past what the parser takes
        (b"[1, 2]", -32600),  # a batch: not a request
        (b"42", -32600),
        (b'{"jsonrpc":"2.0","id":{"x":1},"method":"tools/list"}', -32600),  # an id that is an object
        (b'{"jsonrpc":"1.0","id":5,"method":"tools/list"}', -32600),
        (b'{"jsonrpc":"2.0","id":6,"method":"tools/call","params":[1]}', -32602),
        (b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":7}}', -32602),
        (b'{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"issue_refund","arguments":"x"}}', -32602),
        (b'{"jsonrpc":"2.0","id":9,"method":"resources/list"}', -32601),
    ]
    for line, code in cases:
        proxy.send(line)
        answer = proxy.receive()
        assert answer["error"]["code"] == code, (line[:80], answer)
    # Names and arguments with NUL, lone surrogates, RTL overrides, deep nesting: decided and refused, readable.
    nested: Any = "x"
    for _ in range(500):
        nested = {"a": nested}
    hostile = [
        ("bad\x00name", {"note": "\x00"}),
        ("\ud800lone", {"note": "\udfff"}),
        ("\u202eevil", {"note": "\u202e"}),
        ("issue_refund", {"order_id": "A-\x00\ud800\u202e", "amount": 9000}),
        ("issue_refund", {"order_id": "A-1", "amount": 9000, "deep": nested}),
    ]
    for i, (name, args) in enumerate(hostile):
        answer = proxy.ask(call(100 + i, name, args))
        assert answer["id"] == 100 + i and answer["result"]["isError"] is True, answer
        assert "Blocked by policy" in answer["result"]["content"][0]["text"]
    # Still serving: an allowed call runs.
    answer = proxy.ask(call(200, "issue_refund", {"order_id": "A-9", "amount": 20}))
    assert answer["result"].get("isError") is not True and ledger.read_text() == "A-9 20.0\n"
    assert proxy.close() == 0
    records = decided(proxy_env)
    assert len(records) == len(hostile) + 1
    for record in records[: len(hostile)]:
        assert record["decision"] == "block"
        assert not any(c in record["reason"] + record["tool"] for c in "\x00\u202e\ud800\udfff")


def test_a_message_over_the_limit_is_refused_and_the_next_one_answered(raw: tuple[Raw, Path]) -> None:
    proxy, _ = raw
    from clearance.integrations._mcp_wire import MAX_MESSAGE

    huge = call(1, "issue_refund", {"order_id": "x" * (MAX_MESSAGE + 1024), "amount": 20})
    proxy.send(json.dumps(huge).encode())
    answer = proxy.receive()
    assert answer["error"]["code"] == -32600 and answer["id"] is None
    answer = proxy.ask({"jsonrpc": "2.0", "id": 2, "method": "ping"})
    assert answer == {"jsonrpc": "2.0", "id": 2, "result": {}}


@pytest.mark.parametrize(
    ("body", "ran"),
    [
        # Duplicate keys: the proxy decides on what it parsed (the last value) and forwards that, re-written.
        (b'{"order_id":"A-1","amount":9000,"amount":50}', "A-1 50.0\n"),
        (b'{"order_id":"A-1","amount":50,"amount":9000}', ""),
    ],
    ids=["allowed-as-parsed", "blocked-as-parsed"],
)
def test_what_is_forwarded_is_what_was_decided(raw: tuple[Raw, Path], body: bytes, ran: str) -> None:
    proxy, ledger = raw
    proxy.send(
        b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"issue_refund","arguments":' + body + b"}}"
    )
    answer = proxy.receive()
    assert answer["id"] == 3
    assert (answer["result"].get("isError") is True) == (ran == "")
    assert ledger.read_text() == ran


def test_cancelled_and_concurrent_requests_over_stdio(raw: tuple[Raw, Path]) -> None:
    """Requests are answered as they finish, each under its own id, string ids too."""
    proxy, ledger = raw
    proxy.send(json.dumps(call("a", "issue_refund", {"order_id": "A-1", "amount": 20})).encode())
    proxy.send(json.dumps({"jsonrpc": "2.0", "id": "b", "method": "tools/list"}).encode())
    answers = {a["id"]: a for a in (proxy.receive(), proxy.receive())}
    assert set(answers) == {"a", "b"}
    assert [t["name"] for t in answers["b"]["result"]["tools"]] == ["issue_refund", "environment"]
    assert ledger.read_text() == "A-1 20.0\n"


@pytest.fixture
def http_proxy(tmp_path: Path, proxy_env: dict[str, str]) -> Iterator[tuple[str, Path]]:
    ledger = tmp_path / "ledger.txt"
    ledger.touch()
    port = _free_port()
    argv = [*PROXY, "--upstream", f"refunds={sys.executable} {UPSTREAM} {ledger}", "--http", f"127.0.0.1:{port}"]
    proxy = subprocess.Popen(argv, env=proxy_env)
    try:
        _wait_for_port(port)
        yield f"http://127.0.0.1:{port}/mcp", ledger
    finally:
        proxy.terminate()
        assert proxy.wait(15) is not None


def test_hostile_requests_over_http(http_proxy: tuple[str, Path]) -> None:
    url, ledger = http_proxy
    json_type = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    with httpx.Client(timeout=30) as http:
        opened = http.post(url, content=json.dumps(INIT), headers=json_type)
        assert opened.status_code == 200 and opened.json()["result"]["serverInfo"]["name"] == "clearance-mcp-proxy"
        session = {**json_type, "Mcp-Session-Id": opened.headers["mcp-session-id"]}
        assert http.post(url, content=b"{not json", headers=session).json()["error"]["code"] == -32700
        assert http.post(url, content=b"[" * 200_000, headers=session).json()["error"]["code"] == -32700
        assert http.post(url, content=b"[]", headers=session).json()["error"]["code"] == -32600
        no_session = http.post(url, content=json.dumps(call(1, "issue_refund", {})), headers=json_type)
        assert no_session.status_code == 400
        unknown = http.post(url, content=json.dumps(call(1, "x", {})), headers={**json_type, "Mcp-Session-Id": "nope"})
        assert unknown.status_code == 404
        rebinding = http.post(url, content=json.dumps(INIT), headers={**json_type, "Host": "evil.example"})
        assert rebinding.status_code == 403
        assert http.post(url, content=b"{}", headers={"Content-Type": "text/plain"}).status_code == 415
        assert http.get(url.replace("/mcp", "/other")).status_code == 404
        nul = http.post(url, content=json.dumps(call(2, "bad\x00name", {"n": "\ud800"})), headers=session)
        assert nul.status_code == 200 and nul.json()["result"]["isError"] is True
        dup = b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"issue_refund",'
        dup += b'"arguments":{"order_id":"A-1","amount":9000,"amount":20}}}'
        ok = http.post(url, content=dup, headers=session)
        assert ok.status_code == 200 and ok.json()["result"].get("isError") is not True
        assert http.delete(url, headers=session).status_code == 200
        assert http.post(url, content=dup, headers=session).status_code == 404  # the session is over
    assert ledger.read_text() == "A-1 20.0\n"


# -- the proxy's own HTTP/1.1, byte by byte, with either parser ---------------------------------

NO_HTTPTOOLS = (
    "import runpy, sys; sys.modules['httptools'] = None; runpy.run_module('clearance.cli', run_name='__main__')"
)


@pytest.fixture(params=["httptools", "h11"])
def raw_http(request: pytest.FixtureRequest, tmp_path: Path, proxy_env: dict[str, str]) -> Iterator[tuple[int, Path]]:
    """A proxy serving HTTP on a port, parsing requests with httptools or (without it) h11."""
    ledger = tmp_path / "ledger.txt"
    ledger.touch()
    port = _free_port()
    python = [sys.executable, "-c", NO_HTTPTOOLS] if request.param == "h11" else PROXY[:-1]
    argv = [*python, "mcp-proxy", "--upstream", f"refunds={sys.executable} {UPSTREAM} {ledger}"]
    proxy = subprocess.Popen([*argv, "--http", f"127.0.0.1:{port}"], env=proxy_env)
    try:
        _wait_for_port(port)
        yield port, ledger
    finally:
        proxy.terminate()
        assert proxy.wait(15) is not None


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    return sock


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response read off `sock`: status, headers, body (by its Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the proxy closed the connection: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the proxy closed the connection mid-body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def _closed(sock: socket.socket, within: float) -> bool:
    """Whether the proxy closes `sock` within `within` seconds (anything it sends first is read)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def _post(body: bytes, *headers: str, host: str | None = "127.0.0.1") -> bytes:
    lines = ["POST /mcp HTTP/1.1", *([f"Host: {host}"] if host is not None else [])]
    lines += ["Content-Type: application/json", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _session(port: int) -> str:
    with _connect(port) as sock:
        sock.sendall(_post(json.dumps(INIT).encode()))
        status, headers, _ = _response(sock)
    assert status == 200
    return headers["mcp-session-id"]


def test_partial_requests_and_idle_connections_are_closed(raw_http: tuple[int, Path]) -> None:
    """Slowloris: a request never finished, or none sent, holds its connection only for TIMEOUT."""
    from clearance.integrations._mcp_http import TIMEOUT

    port, _ = raw_http
    partial, idle, answered = _connect(port), _connect(port), _connect(port)
    with partial, idle, answered:
        partial.sendall(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{")
        answered.sendall(_post(b'{"jsonrpc":"2.0","method":"notifications/initialized"}'))
        assert _response(answered)[0] == 202  # then idle, kept alive
        for sock in (partial, idle, answered):
            assert _closed(sock, TIMEOUT + 20), "the proxy held a connection that sent no whole request"


HOSTS = [
    # (Host header lines, Origin, allowed)
    (["Host: 127.0.0.1:{port}"], None, True),
    (["Host: [::1]:{port}"], None, True),
    (["Host: localhost"], "http://localhost:3000", True),
    (["Host: localhost"], "http://[::1]", True),
    (["Host: 127.0.0.1:80@evil.example"], None, False),
    (["Host: localhost:evil.example"], None, False),
    (["Host: localhost."], None, False),
    (["Host: 127.0.0.1.nip.io"], None, False),
    (["Host: ::1"], None, False),
    (["Host: [::1]evil"], None, False),
    (["Host: evil.example", "Host: 127.0.0.1"], None, False),  # two Hosts: no loopback Host
    (["Host: 127.0.0.1", "Host: evil.example"], None, False),
    ([], None, False),
    (["Host: localhost"], "null", False),
    (["Host: localhost"], "http://localhost.evil.example", False),
    (["Host: localhost"], "http://127.0.0.1:80@evil.example", False),
    (["Host: localhost"], "file://", False),
    (["Host: LOCALHOST:{port}"], None, True),  # host names are case-insensitive
]


def test_only_loopback_hosts_and_origins_are_served(raw_http: tuple[int, Path]) -> None:
    port, _ = raw_http
    session = _session(port)
    ping = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    for hosts, origin, allowed in HOSTS:
        lines = [h.format(port=port) for h in hosts] + ([f"Origin: {origin}"] if origin else [])
        # HTTP/1.0 lets a request go without Host; the proxy still wants one.
        request = _post(ping, *lines, f"Mcp-Session-Id: {session}", host=None)
        if not hosts:
            request = request.replace(b"HTTP/1.1", b"HTTP/1.0", 1)
        with _connect(port) as sock:
            sock.sendall(request)
            status, _, body = _response(sock)
        assert (status == 200) == allowed, (hosts, origin, status, body)
        if not allowed:
            assert status in (400, 403), (hosts, origin, status)


@pytest.mark.parametrize(("address", "given"), [("127.0.0.2", "127.0.0.2"), ("::1", "[::1]")])
def test_any_loopback_address_served_checks_host(
    tmp_path: Path, proxy_env: dict[str, str], address: str, given: str
) -> None:
    """Served on 127.0.0.2 (loopback too) or [::1], a request naming another Host is refused: no DNS rebinding."""
    ledger = tmp_path / "ledger.txt"
    ledger.touch()
    port = _free_port()
    argv = [*PROXY, "--upstream", f"refunds={sys.executable} {UPSTREAM} {ledger}", "--http", f"{given}:{port}"]
    proxy = subprocess.Popen(argv, env=proxy_env)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proxy.poll() is None, "the proxy exited"
            try:
                sock = socket.create_connection((address, port), timeout=30)
                break
            except OSError:
                assert time.monotonic() < deadline, f"the proxy does not listen on {given}"
                time.sleep(0.05)
        with sock:
            sock.sendall(_post(json.dumps(INIT).encode(), host=f"{given}:{port}"))
            assert _response(sock)[0] == 200
            sock.sendall(_post(json.dumps(INIT).encode(), host=f"rebound.example:{port}"))
            assert _response(sock)[0] == 403
    finally:
        proxy.terminate()
        assert proxy.wait(15) is not None


def test_content_length_beside_transfer_encoding_is_refused(raw_http: tuple[int, Path]) -> None:
    """A request framed two ways is not read either way (request smuggling): 400, the connection closed."""
    port, ledger = raw_http
    session = _session(port)
    body = json.dumps(call(1, "issue_refund", {"order_id": "A-1", "amount": 20})).encode()
    head = _post(b"", f"Mcp-Session-Id: {session}", "Transfer-Encoding: chunked").replace(
        b"Content-Length: 0", b"Content-Length: 3"
    )
    with _connect(port) as sock:
        sock.sendall(head + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
        status, _, _ = _response(sock)
        assert status == 400
        assert _closed(sock, 10)
    # and a well-framed call still runs
    with _connect(port) as sock:
        sock.sendall(_post(body, f"Mcp-Session-Id: {session}"))
        status, _, answer = _response(sock)
    assert status == 200 and json.loads(answer)["result"].get("isError") is not True
    assert ledger.read_text() == "A-1 20.0\n"


# -- an upstream that writes down the exact JSON it receives --------------------------------------

RAW_UPSTREAM = r"""
import json, sys
received, junk = sys.argv[1], len(sys.argv) > 2
for line in sys.stdin:
    message = json.loads(line)
    if "id" not in message:
        continue
    method, params = message["method"], message.get("params") or {}
    if method == "initialize":
        result = {"protocolVersion": params["protocolVersion"], "capabilities": {"tools": {}},
                  "serverInfo": {"name": "raw", "version": "0"}}
    elif method == "tools/list":
        result = {"tools": [{"name": "issue_refund", "inputSchema": {"type": "object"}}]}
    elif method == "tools/call":
        with open(received, "a") as out:
            out.write(json.dumps(params["arguments"]) + "\n")
        if junk:  # answers to no request of the proxy's, with ids it never sends
            for bad in ([message["id"]], {"x": 1}, None, 1.5, "nope"):
                sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": bad, "result": {}}) + "\n")
        result = {"content": [{"type": "text", "text": "done"}]}
    else:
        result = {}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}) + "\n")
    sys.stdout.flush()
"""


def _raw_upstream_proxy(tmp_path: Path, env: dict[str, str], *extra: str) -> tuple[Raw, Path]:
    script, received = tmp_path / "raw_upstream.py", tmp_path / "received.jsonl"
    script.write_text(RAW_UPSTREAM)
    received.touch()
    upstream = f"refunds={sys.executable} {script} {received} {' '.join(extra)}".strip()
    proxy = Raw(received, env, [*PROXY, "--upstream", upstream, "--approval-wait", "0.2"])
    assert proxy.ask(INIT)["result"]["protocolVersion"] == "2025-06-18"
    return proxy, received


def test_a_retry_runs_the_arguments_that_were_approved(tmp_path: Path, proxy_env: dict[str, str]) -> None:
    """A retry picks up the pending approval by its arguments' hash, where 850.0 and 850 are one (RFC 8785):
    what the upstream receives is the call as it was decided and approved, not the retry's spelling."""
    from clearance import _decisions
    from clearance._store import _approvals as approvals

    from ._shared import LEAD

    proxy, received = _raw_upstream_proxy(tmp_path, proxy_env)
    try:
        first = proxy.ask(call(1, "issue_refund", {"order_id": "A-1", "amount": 850}))
        assert "Waiting for approval" in first["result"]["content"][0]["text"]
        [pending] = approvals.listing(db_of(proxy_env))
        _decisions.decide(db_of(proxy_env), pending.id, by=LEAD, approve=True)
        proxy.send(
            b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"issue_refund",'
            b'"arguments":{"amount":850.0,"order_id":"A-1"}}}'
        )
        second = proxy.receive()
        assert second["result"]["content"][0]["text"] == "done", second
    finally:
        proxy.close()
    assert received.read_text() == '{"order_id": "A-1", "amount": 850}\n'


def test_answers_with_ids_the_proxy_never_sent_are_dropped(tmp_path: Path, proxy_env: dict[str, str]) -> None:
    """An upstream's stray answers (ids that are lists, objects, null) neither end its connection nor answer a call."""
    proxy, received = _raw_upstream_proxy(tmp_path, proxy_env, "junk")
    try:
        for i in range(3):
            answer = proxy.ask(call(i, "issue_refund", {"order_id": f"A-{i}", "amount": 20}))
            assert answer["id"] == i and answer["result"]["content"][0]["text"] == "done", answer
    finally:
        proxy.close()
    assert len(received.read_text().splitlines()) == 3
