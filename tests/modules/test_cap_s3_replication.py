"""cap_s3_replication run through Ansible, against a minimal S3 endpoint that keeps one
bucket's replication configuration (GET, PUT and DELETE /<bucket>?replication) and
counts the requests, so idempotency and check mode are seen on the wire."""

import http.server
import threading

import pytest

BUCKET = "cap-backups"
ROLE = "arn:aws:iam::123456789012:role/cap-backup-replication"
NOT_FOUND = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ReplicationConfigurationNotFoundError</Code>'
             b'<Message>The replication configuration was not found</Message></Error>')
OWNED = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>BucketAlreadyOwnedByYou</Code>'
         b'<Message>Your previous request to create the named bucket succeeded</Message></Error>')


class FakeS3(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.configuration = None   # the XML body last PUT
        self.requests = []          # (method, path)
        self.without_replication = False  # answer PUT as an endpoint without the API

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server_address[1]

    def writes(self):
        return [r for r in self.requests if r[0] in ("PUT", "DELETE")]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _answer(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self):
        self.server.requests.append((self.command, self.path))
        if self.path.split("?")[0].strip("/") != BUCKET or "replication" not in self.path:
            self._answer(400, b"<Error><Code>InvalidRequest</Code><Message>unexpected</Message></Error>")
            return False
        return True

    def do_GET(self):
        if self._route():
            if self.server.configuration is None:
                self._answer(404, NOT_FOUND)
            else:
                self._answer(200, self.server.configuration)

    def do_PUT(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self._route():
            if self.server.without_replication:
                self._answer(409, OWNED)
                return
            self.server.configuration = body
            self._answer(200)

    def do_DELETE(self):
        if self._route():
            self.server.configuration = None
            self._answer(204)


@pytest.fixture
def s3():
    server = FakeS3()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def args(server, **kw):
    base = dict(bucket=BUCKET, role_arn=ROLE, endpoint_url=server.url, region="us-east-1",
                access_key="AKIAFAKEFAKEFAKE", secret_key="fake-secret",
                rules=[dict(id="cap-backup-replication:prod/", prefix="prod/",
                            destination_bucket="cap-backups-eu-central-1")])
    base.update(kw)
    return base


def test_set_then_unchanged(module, s3):
    res = module("cap_s3_replication", args(s3))
    assert not res.failed, res.msg
    assert res.changed
    assert res["previous"] is None
    rules = res["replication"]["Rules"]
    assert res["replication"]["Role"] == ROLE
    assert rules[0]["Destination"] == {"Bucket": "arn:aws:s3:::cap-backups-eu-central-1",
                                       "StorageClass": "STANDARD"}
    assert rules[0]["Filter"] == {"Prefix": "prod/"}
    assert len([r for r in s3.writes() if r[0] == "PUT"]) == 1

    again = module("cap_s3_replication", args(s3))
    assert not again.failed, again.msg
    assert not again.changed
    assert len(s3.writes()) == 1


def test_check_mode_writes_nothing(module, s3):
    module("cap_s3_replication", args(s3))
    stored = s3.configuration
    other = args(s3)
    other["rules"][0]["storage_class"] = "GLACIER"
    res = module("cap_s3_replication", other, check=True, diff=True)
    assert not res.failed, res.msg
    assert res.changed
    assert res["replication"]["Rules"][0]["Destination"]["StorageClass"] == "GLACIER"
    assert res["previous"]["Rules"][0]["Destination"]["StorageClass"] == "STANDARD"
    assert s3.configuration == stored and len(s3.writes()) == 1

    res = module("cap_s3_replication", other)
    assert res.changed and not res.failed, res.msg
    assert b"<StorageClass>GLACIER</StorageClass>" in s3.configuration


def test_absent(module, s3):
    module("cap_s3_replication", args(s3))
    res = module("cap_s3_replication", dict(bucket=BUCKET, state="absent", endpoint_url=s3.url,
                                            region="us-east-1", access_key="AKIAFAKEFAKEFAKE",
                                            secret_key="fake-secret"))
    assert not res.failed, res.msg
    assert res.changed and res["replication"] is None and s3.configuration is None
    again = module("cap_s3_replication", dict(bucket=BUCKET, state="absent", endpoint_url=s3.url,
                                              region="us-east-1", access_key="AKIAFAKEFAKEFAKE",
                                              secret_key="fake-secret"))
    assert not again.failed and not again.changed


def test_invalid_options_fail_before_any_request(module, s3):
    res = module("cap_s3_replication", args(s3, role_arn="cap-backup-replication"))
    assert res.failed
    assert res.msg.startswith("Invalid replication for bucket cap-backups: role_arn 'cap-backup-replication' "
                              "is not an IAM role ARN")
    missing = module("cap_s3_replication", dict(bucket=BUCKET, endpoint_url=s3.url, region="us-east-1"))
    assert missing.failed and "role_arn" in missing.msg and "rules" in missing.msg
    assert s3.requests == []


def test_endpoint_without_replication(module, s3):
    s3.without_replication = True
    res = module("cap_s3_replication", args(s3))
    assert res.failed
    assert res["unsupported"] is True
    assert res.msg.startswith("Replication of bucket cap-backups: the S3 endpoint does not support bucket "
                              "replication (PutBucketReplication answered BucketAlreadyOwnedByYou")
    assert "fake-secret" not in res.proc.stdout + res.proc.stderr
