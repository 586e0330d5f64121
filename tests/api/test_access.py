"""Issue "Safe to expose", black box against real ``maxage serve`` processes: API keys and
scopes on every route, revocation, --auth modes, rate limits, CORS, a busy port."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.launcher import ServerProcess, launch, python_m

CONFIG = """
[collections.posts]
max_staleness = "5s"
ttl = "1m"
[collections.posts.schema]
type = "object"
properties = { t = { type = "integer" } }

[collections.notes]
max_staleness = "5s"
[collections.notes.schema]
type = "object"
properties = { t = { type = "integer" } }
"""


def keys_cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        python_m("keys", *args, "--db", f"sqlite:///{db}"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def new_key(db: Path, scopes: str) -> tuple[str, str]:
    """(key id, secret) from ``maxage keys create``: the secret alone on the last line."""
    out = keys_cli(db, "create", "--scopes", scopes, "--name", "test")
    assert out.returncode == 0, out.stderr
    secret = out.stdout.strip().splitlines()[-1]
    assert secret.startswith("mxa_") and secret not in out.stderr
    return secret.split("_")[1], secret


class Api:
    def __init__(self, server: ServerProcess, db: Path) -> None:
        self.server = server
        self.db = db
        self.admin_id, self.admin = new_key(db, "admin,read:*,write:*")

    def client(self, secret: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {secret}"} if secret else {}
        return httpx.Client(base_url=self.server.url, headers=headers, trust_env=False, timeout=10)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    work = tmp_path_factory.mktemp("access")
    (work / "c.toml").write_text(CONFIG)
    db = work / "db.sqlite"
    server = launch(
        "serve", "--port", "0", "--auth", "keys", "--auth-staleness", "250ms",
        "--config", str(work / "c.toml"), "--db", f"sqlite:///{db}", workdir=work,
    )  # fmt: skip
    try:
        assert "auth keys" in server.stdout()
        yield Api(server, db)
        assert server.stop() == 0, server.stderr()
    finally:
        server.kill()


def problem(r: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, object] = r.json()
    assert body["code"] == code
    return body


def test_every_data_route_needs_a_key(api: Api) -> None:
    with api.client(api.admin) as admin:
        doc = admin.post("/v1/posts", json={"t": 1}).json()["id"]
    routes = [
        ("GET", f"/v1/posts/{doc}"),
        ("HEAD", f"/v1/posts/{doc}"),
        ("GET", "/v1/posts"),
        ("GET", "/v1/posts/changes"),
        ("POST", "/v1/posts"),
        ("PUT", f"/v1/posts/{doc}"),
        ("PATCH", f"/v1/posts/{doc}"),
        ("DELETE", f"/v1/posts/{doc}"),
        ("GET", "/v1/_keys"),
        ("POST", "/v1/_keys"),
        ("DELETE", "/v1/_keys/0123456789abcdef"),
    ]
    for secret in (None, "mxa_0123456789abcdef_" + "A" * 43, "not-a-key"):
        with api.client(secret) as c:
            for method, path in routes:
                r = c.request(method, path, json={} if method in ("POST", "PUT") else None)
                assert r.status_code == 401, (method, path, secret, r.text)
                assert r.headers["www-authenticate"].startswith("Bearer")
                if method != "HEAD":
                    problem(r, 401, "unauthenticated")


def test_public_routes_need_no_key(api: Api) -> None:
    with api.client() as c:
        for path in ("/livez", "/readyz", "/metrics", "/openapi.json", "/docs"):
            assert c.get(path).status_code == 200, path


def test_each_scope_opens_exactly_its_routes(api: Api) -> None:
    with api.client(api.admin) as admin:
        doc = admin.post("/v1/posts", json={"t": 1}).json()["id"]
        note = admin.post("/v1/notes", json={"t": 1}).json()["id"]
    cases = {
        "read:posts": {("GET", f"/v1/posts/{doc}"), ("GET", "/v1/posts"), ("GET", "/v1/posts/changes")},
        "write:posts": {("POST", "/v1/posts"), ("PATCH", f"/v1/posts/{doc}")},
        "read:*": {("GET", f"/v1/posts/{doc}"), ("GET", "/v1/posts"), ("GET", "/v1/posts/changes"),
                   ("GET", f"/v1/notes/{note}"), ("GET", "/v1/notes")},
        "write:*": {("POST", "/v1/posts"), ("PATCH", f"/v1/posts/{doc}"), ("POST", "/v1/notes")},
        "admin": {("GET", "/v1/_keys")},
    }  # fmt: skip
    every = set().union(*cases.values())
    needs = {  # the scope a refusal names, per route
        ("GET", f"/v1/posts/{doc}"): "read:posts",
        ("GET", "/v1/posts"): "read:posts",
        ("GET", "/v1/posts/changes"): "read:posts",
        ("GET", f"/v1/notes/{note}"): "read:notes",
        ("GET", "/v1/notes"): "read:notes",
        ("POST", "/v1/posts"): "write:posts",
        ("PATCH", f"/v1/posts/{doc}"): "write:posts",
        ("POST", "/v1/notes"): "write:notes",
        ("GET", "/v1/_keys"): "admin",
    }
    for scope, allowed in cases.items():
        _, secret = new_key(api.db, scope)
        with api.client(secret) as c:
            for method, path in sorted(every):
                kw: dict[str, object] = {}
                if method == "POST":
                    kw = {"json": {"t": 2}}
                elif method == "PATCH":
                    kw = {
                        "content": b'{"t":3}',
                        "headers": {"content-type": "application/merge-patch+json"},
                    }
                r = c.request(method, path, **kw)  # type: ignore[arg-type]
                if (method, path) in allowed:
                    assert r.status_code < 400, (scope, method, path, r.text)
                else:
                    body = problem(r, 403, "forbidden")
                    assert body["scope"] == needs[(method, path)], (scope, method, path)


def test_keys_over_http_and_revocation(api: Api) -> None:
    with api.client(api.admin) as admin:
        r = admin.post("/v1/_keys", json={"scopes": ["read:posts"], "name": "reader"})
        assert r.status_code == 201 and r.headers["cache-control"] == "no-store"
        made = r.json()
        assert set(made) >= {"id", "secret", "scopes", "name"} and made["scopes"] == ["read:posts"]
        listed = admin.get("/v1/_keys").json()["data"]
        assert made["id"] in {k["id"] for k in listed}
        assert (
            all("secret" not in k for k in listed)
            and made["secret"] not in admin.get("/v1/_keys").text
        )
        doc = admin.post("/v1/posts", json={"t": 1}).json()["id"]
        with api.client(made["secret"]) as reader:
            for _ in range(3):  # the second and third reads are cache hits, key cached too
                assert reader.get(f"/v1/posts/{doc}").status_code == 200
            assert admin.delete(f"/v1/_keys/{made['id']}").status_code == 204
            problem(reader.get(f"/v1/posts/{doc}"), 401, "unauthenticated")
            assert admin.delete(f"/v1/_keys/{made['id']}").status_code == 204  # idempotent
            problem(admin.patch(f"/v1/_keys/{made['id']}", json={"scopes": ["admin"]}), 404,
                    "key_not_found")  # fmt: skip
        problem(admin.delete("/v1/_keys/ffffffffffffffff"), 404, "key_not_found")
        bad = admin.post("/v1/_keys", json={"scopes": ["read:nope", "root"]})
        assert len(problem(bad, 422, "validation_failed")["errors"]) == 2  # type: ignore[arg-type]
    # the secret never reaches the server's logs
    assert made["secret"] not in api.server.stdout() + api.server.stderr()


def test_rescope_is_never_stale(api: Api) -> None:
    with api.client(api.admin) as admin:
        key = admin.post("/v1/_keys", json={"scopes": ["read:posts", "write:posts"]}).json()
        with api.client(key["secret"]) as c:
            assert c.post("/v1/posts", json={"t": 1}).status_code == 201
            r = admin.patch(f"/v1/_keys/{key['id']}", json={"scopes": ["read:posts"]})
            assert r.status_code == 200 and r.json()["scopes"] == ["read:posts"]
            assert (
                problem(c.post("/v1/posts", json={"t": 1}), 403, "forbidden")["scope"]
                == "write:posts"
            )


def test_idempotency_keys_are_scoped_per_api_key(api: Api) -> None:
    _, one = new_key(api.db, "write:posts,read:posts")
    _, two = new_key(api.db, "write:posts,read:posts")
    headers = {"idempotency-key": "same-key"}
    with api.client(one) as a, api.client(two) as b:
        first = a.post("/v1/posts", json={"t": 1}, headers=headers)
        other = b.post("/v1/posts", json={"t": 1}, headers=headers)
        assert first.status_code == other.status_code == 201
        assert first.json()["id"] != other.json()["id"]
        assert "idempotent-replayed" not in other.headers
        assert (
            a.post("/v1/posts", json={"t": 1}, headers=headers).headers["idempotent-replayed"]
            == "true"
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_auth_none_on_a_public_address_is_refused(tmp_path: Path) -> None:
    out = subprocess.run(
        python_m("serve", "--host", "0.0.0.0", "--port", "0", "--auth", "none",
                 "--db", f"sqlite:///{tmp_path}/db.sqlite"),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 2 and "--insecure-no-auth" in out.stderr


def test_insecure_no_auth_starts_with_a_warning(tmp_path: Path) -> None:
    s = launch("serve", "--host", "0.0.0.0", "--port", "0", "--auth", "none",
               "--insecure-no-auth", "--db", f"sqlite:///{tmp_path}/db.sqlite", workdir=tmp_path)  # fmt: skip
    try:
        assert "WARNING: auth none" in s.stdout()
    finally:
        assert s.stop() == 0
        s.kill()


def test_auto_is_keys_off_loopback_and_none_on_it(tmp_path: Path) -> None:
    s = launch("serve", "--port", "0", "--db", f"sqlite:///{tmp_path}/db.sqlite", workdir=tmp_path)
    try:
        assert "auth none" in s.stdout()
        with httpx.Client(base_url=s.url, trust_env=False) as c:
            assert c.post("/v1/products", json={"name": "x", "price": 1}).status_code == 201
    finally:
        s.stop()
        s.kill()


def test_a_busy_port_is_refused(tmp_path: Path) -> None:
    first = launch(
        "serve", "--port", "0", "--db", f"sqlite:///{tmp_path}/a.sqlite", workdir=tmp_path
    )
    try:
        port = first.port
        out = subprocess.run(
            python_m("serve", "--port", str(port), "--db", f"sqlite:///{tmp_path}/b.sqlite"),
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert out.returncode == 2 and "cannot listen" in out.stderr, out.stderr
    finally:
        first.stop()
        first.kill()
    assert sys.platform  # the second server never started: nothing to stop


LIMITED = """
[collections.posts]
max_staleness = "5s"
[collections.posts.schema]
type = "object"
properties = { t = { type = "integer" } }

[rate_limits]
default = "2/s"
burst = 3

[[rate_limits.override]]
collection = "posts"
method = "POST"
rate = "10/m"
burst = 1

[cors]
allow_origins = ["https://app.example.com"]
"""


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    work = tmp_path_factory.mktemp("limited")
    (work / "c.toml").write_text(LIMITED)
    server = launch("serve", "--port", "0", "--config", str(work / "c.toml"),
                    "--db", f"sqlite:///{work}/db.sqlite", workdir=work)  # fmt: skip
    try:
        yield server
        assert server.stop() == 0
    finally:
        server.kill()


def _wait_until(predicate: object, timeout: float, what: str) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_rate_limit_answers_429_with_headers_and_recovers(limited: ServerProcess) -> None:
    with httpx.Client(base_url=limited.url, trust_env=False) as c:
        assert c.post("/v1/posts", json={"t": 1}).status_code == 201  # its own policy
        r = c.post("/v1/posts", json={"t": 1})
        problem(r, 429, "rate_limited")
        assert r.headers["ratelimit-policy"] == '"posts.POST";q=1;w=6'
        assert r.headers["ratelimit"].startswith('"posts.POST";r=0;t=')
        assert 1 <= int(r.headers["retry-after"]) <= 6
        statuses = [c.get("/v1/posts").status_code for _ in range(6)]
        assert statuses.count(429) >= 3 and statuses[:3] == [200, 200, 200], statuses
        ok = c.get("/livez")  # never limited
        assert ok.status_code == 200 and "ratelimit" not in ok.headers
        _wait_until(lambda: c.get("/v1/posts").status_code == 200, 2.0, "the bucket to refill")
        r = c.get("/v1/posts")
        assert r.headers["ratelimit-policy"] == '"default";q=3;w=2'


def test_cors_preflight_and_simple_requests(limited: ServerProcess) -> None:
    origin = "https://app.example.com"
    with httpx.Client(base_url=limited.url, trust_env=False) as c:
        pre = c.options(
            "/v1/posts/x",
            headers={"origin": origin, "access-control-request-method": "PATCH",
                     "access-control-request-headers": "authorization, if-match"},
        )  # fmt: skip
        assert pre.status_code == 204
        assert pre.headers["access-control-allow-origin"] == origin
        assert "PATCH" in pre.headers["access-control-allow-methods"]
        allowed = pre.headers["access-control-allow-headers"]
        for h in ("authorization", "if-match", "idempotency-key", "x-request-id"):
            assert h in allowed
        assert "Origin" in pre.headers["vary"]
        other = c.options("/v1/posts", headers={"origin": "https://evil.example",
                                                "access-control-request-method": "GET"})  # fmt: skip
        assert "access-control-allow-origin" not in other.headers
        simple = c.get("/v1/posts", headers={"origin": origin})
        assert simple.headers["access-control-allow-origin"] == origin
        exposed = simple.headers["access-control-expose-headers"]
        for h in ("etag", "location", "cache-status", "age", "ratelimit", "x-request-id"):
            assert h in exposed
        assert "access-control-allow-origin" not in c.get("/v1/posts").headers


def test_rate_limits_fall_back_per_process_when_redis_is_away(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(LIMITED)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # nothing listens here once the socket closes
    server = launch("serve", "--port", "0", "--config", str(tmp_path / "c.toml"),
                    "--db", f"sqlite:///{tmp_path}/db.sqlite", "--cache", f"redis://127.0.0.1:{dead}/0",
                    workdir=tmp_path)  # fmt: skip
    try:
        with httpx.Client(base_url=server.url, trust_env=False) as c:
            statuses = [c.get("/v1/posts").status_code for _ in range(5)]
            assert statuses[:3] == [200, 200, 200] and 429 in statuses[3:], statuses
            text = c.get("/metrics").text
            fallbacks = [
                ln for ln in text.splitlines() if ln.startswith("maxage_rate_limit_fallbacks_total")
            ]
            assert fallbacks and float(fallbacks[0].split()[-1]) >= 5
        assert server.stop() == 0
    finally:
        server.kill()


def test_a_follow_stream_ends_when_its_key_is_revoked(api: Api) -> None:
    import threading

    with api.client(api.admin) as admin:
        key = admin.post("/v1/_keys", json={"scopes": ["read:posts"]}).json()
        assert admin.post("/v1/posts", json={"t": 1}).status_code == 201  # a first line to send
        opened, ended = threading.Event(), threading.Event()
        status: list[int] = []

        def follow() -> None:
            with (
                api.client(key["secret"]) as c,
                c.stream("GET", "/v1/posts/changes", params={"follow": "true"}, timeout=30) as r,
            ):
                status.append(r.status_code)
                opened.set()
                for _ in r.iter_bytes():
                    pass
            ended.set()

        t = threading.Thread(target=follow, daemon=True)
        t.start()
        assert opened.wait(10) and status == [200]
        assert not ended.is_set()
        assert admin.delete(f"/v1/_keys/{key['id']}").status_code == 204
        assert ended.wait(10), "the stream outlived its key"


def test_batch_needs_the_collections_write_scope(api: Api) -> None:
    body = {"operations": [{"op": "create", "data": {"t": 1}}]}
    with api.client() as anonymous:
        problem(anonymous.post("/v1/posts:batch", json=body), 401, "unauthenticated")
    for scope in ("read:posts", "read:*", "write:notes"):
        _, secret = new_key(api.db, scope)
        with api.client(secret) as c:
            refused = problem(c.post("/v1/posts:batch", json=body), 403, "forbidden")
            assert refused["scope"] == "write:posts", scope
    for scope in ("write:posts", "write:*"):
        _, secret = new_key(api.db, scope)
        with api.client(secret) as c:
            r = c.post("/v1/posts:batch", json=body)
            assert r.status_code == 200, (scope, r.text)
