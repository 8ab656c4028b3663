"""The API server in-process: error paths, raw HTTP edge cases, and the OpenAPI description."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest
import requests
import yaml

from sandbox import auth, cap_api

SECRET = b"in-process-secret-0123456789"
OPENAPI = Path(cap_api.__file__).resolve().parent / "content" / "openapi" / "openapi.yaml"


@pytest.fixture
def server(tmp_path):
    srv = cap_api.build_server(str(tmp_path / "app"), 0, SECRET)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    srv.api.log.close()
    thread.join(timeout=5)


def url(srv, path):
    return "http://127.0.0.1:%d%s" % (srv.server_address[1], path)


def token_header():
    return {"Authorization": "Bearer " + auth.mint_token(SECRET)}


def raw_exchange(srv, payload):
    with socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=10) as sock:
        sock.sendall(payload)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def test_unexpected_exceptions_answer_500_json_without_a_traceback(server, monkeypatch):
    def explode():
        raise RuntimeError("boom in the store")

    monkeypatch.setattr(server.api.store, "hashes", explode)
    response = requests.get(url(server, "/api/v1/policies"), headers=token_header(), timeout=10)
    assert response.status_code == 500
    assert response.json() == {"error": "internal_error", "message": "internal server error; see the API log"}
    assert "Traceback" not in response.text and "boom" not in response.text
    log = Path(server.api.data_dir, "logs", "api.log").read_text()
    assert "RuntimeError: boom in the store" in log
    assert requests.get(url(server, "/healthz"), timeout=10).status_code == 200


def test_malformed_request_line_gets_a_json_400(server):
    for line in (b"NONSENSE\r\n\r\n", b"GET / HTTP/1.1 extra\r\n\r\n"):
        reply = raw_exchange(server, line)
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400"), reply
        assert b"application/json" in head
        assert b'"error": "bad_request"' in body


def test_oversized_and_chunked_bodies_are_refused(server):
    big = raw_exchange(server, b"POST /api/v1/verify HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                       % (cap_api.MAX_BODY_BYTES + 1))
    assert big.startswith(b"HTTP/1.1 413")
    chunked = raw_exchange(server, b"POST /api/v1/verify HTTP/1.1\r\nHost: x\r\n"
                           b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert chunked.startswith(b"HTTP/1.1 411")
    bad_length = raw_exchange(server, b"POST /api/v1/verify HTTP/1.1\r\nHost: x\r\n"
                              b"Content-Length: -1\r\n\r\n")
    assert bad_length.startswith(b"HTTP/1.1 400")


def test_keep_alive_survives_error_responses(server):
    session = requests.Session()
    for _ in range(3):
        assert session.post(url(server, "/api/v1/verify"), data=b'{"manifest_hash": 1}',
                            headers=token_header(), timeout=10).status_code == 400
        assert session.post(url(server, "/api/v1/verify"), data=b"{}", timeout=10).status_code == 401
        assert session.get(url(server, "/healthz"), timeout=10).status_code == 200
    session.close()


@pytest.mark.parametrize("host, expected", [("127.0.0.1", "127.0.0.1"), ("127.8.9.10", "127.8.9.10"),
                                            ("localhost", "127.0.0.1"), ("::1", "::1")])
def test_loopback_hosts_are_accepted(host, expected):
    assert cap_api.loopback_host(host)[0] == expected


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "cap.example.com", ""])
def test_other_hosts_are_refused(host):
    with pytest.raises(ValueError, match="loopback"):
        cap_api.loopback_host(host)


def test_openapi_describes_exactly_the_served_routes():
    spec = yaml.safe_load(OPENAPI.read_text())
    assert spec["info"]["version"] == cap_api.VERSION
    documented = {path: {m.upper() for m in ops if m != "parameters"} for path, ops in spec["paths"].items()}
    served = {route.template: set(route.methods) for route in cap_api.ROUTES}
    assert set(documented) == set(served)
    for path, methods in served.items():
        assert methods <= documented[path], path
        assert documented[path] - methods <= {"HEAD"}, path
        for method in methods:
            operation = spec["paths"][path][method.lower()]
            route = next(r for r in cap_api.ROUTES if r.template == path)
            assert (operation.get("security") == []) == (route.scope is None), path


def test_data_directory_is_created_for_an_empty_instance(tmp_path):
    target = tmp_path / "does" / "not" / "exist"
    srv = cap_api.build_server(str(target), 0, SECRET)
    try:
        assert target.is_dir() and (target / "logs" / "api.log").exists()
        assert os.listdir(target) == ["logs"]
    finally:
        srv.server_close()
        srv.api.log.close()
