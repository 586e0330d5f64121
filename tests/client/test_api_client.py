"""``maxage_client`` against real ``maxage serve`` processes, as a user would use it:
read-your-writes across two client processes and two server processes (session token),
an idempotent write retried through a lost answer takes effect once, 429s are retried
after ``Retry-After`` and 422s never, the deadline reaches the server, conditional updates,
the page iterator, typed problems, bearer keys, and the async client."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from maxage_client import (
    AsyncClient,
    Client,
    ConnectionFailed,
    DeadlineExceeded,
    InvalidRequest,
    NotFound,
    PreconditionFailed,
    RetryPolicy,
    Session,
    Unauthenticated,
    ValidationFailed,
)
from maxage_client.transport import OnRetry

from tests.client.conftest import serve
from tests.support.launcher import ServerProcess, python_m
from tests.support.proxy import DroppingProxy

Retries = list[tuple[int, float, str]]


def recording() -> tuple[Retries, OnRetry]:
    seen: Retries = []
    return seen, lambda n, delay, reason: seen.append((n, delay, reason))


# -- read-your-writes across processes ---------------------------------------------------


CLIENT_SCRIPT = """
import json, sys
from maxage_client import Client, Session
url, action, arg = sys.argv[1], sys.argv[2], sys.argv[3]
if action == "write":
    with Client(url) as api:
        posts = api.collection("posts")
        post = posts.create({"title": "v1"})
        posts.get(post.id)                       # warm reads elsewhere are the test's business
        post = posts.update(post.id, {"title": "v2"}, expected_version=post.version)
        print(json.dumps({"id": post.id, "version": post.version, "token": api.session.token()}))
else:
    doc_id, token = arg.split(" ")
    with Client(url, session=Session.from_token(token) if token != "-" else None) as api:
        post = api.collection("posts").get(doc_id)
        print(json.dumps({"version": post.version, "consistency": post.consistency}))
"""


def run_client(*args: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", CLIENT_SCRIPT, *args],
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two servers on one SQLite file; B can stall its tailer (--fault-injection)."""
    work = tmp_path_factory.mktemp("pair")
    a = serve(work, name="a")
    b = serve(work, "--fault-injection", name="b")
    try:
        yield a, b
    finally:
        a.kill()
        b.kill()


def test_read_your_writes_across_two_client_processes_and_two_servers(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    """A writes; B's tailer is stalled, so B keeps serving its cached older version (within
    the bound). A client process without the writer's session may get that older version;
    one with the session token never does."""
    a, b = pair
    with Client(a.url) as writer:
        doc = writer.collection("posts").create({"title": "v1"})
    with httpx.Client(base_url=b.url, trust_env=False) as raw:
        assert raw.put("/_maxage/faults", json={"faults": {"stall-tailer": 1}}).status_code == 200
    try:
        for _ in range(3):  # a tailer poll B began before the stall may still apply one write
            with Client(b.url) as reader:  # B's own cache holds the current version
                cached = reader.collection("posts").get(doc.id, consistency="bounded")
                for _ in range(50):
                    if "hit; detail=l1" in cached.cache_status:
                        break
                    cached = reader.collection("posts").get(doc.id, consistency="bounded")
                assert "hit; detail=l1" in cached.cache_status, cached.cache_status
            with Client(a.url, session=Session()) as writer:
                posts = writer.collection("posts")
                posts.get(doc.id, consistency="strong")
                latest = posts.update(doc.id, {"title": "newer"}, expected_version=cached.version)
                token = writer.session.token()
            plain = run_client(b.url, "read", f"{doc.id} -")
            if plain["version"] == cached.version:
                break
        assert plain["version"] == cached.version < latest.version, "B was never stale"
        # ... with the session token a process is never served older than the writer wrote.
        session = run_client(b.url, "read", f"{doc.id} {token}")
        assert session == {"version": latest.version, "consistency": "session"}
    finally:
        with httpx.Client(base_url=b.url, trust_env=False) as raw:
            raw.put("/_maxage/faults", json={"faults": {}})


def test_a_session_token_written_by_one_process_is_read_by_another(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = pair
    wrote = run_client(a.url, "write", "-")
    assert wrote["version"] == 2
    got = run_client(b.url, "read", f"{wrote['id']} {wrote['token']}")
    assert got["version"] == 2 and got["consistency"] == "session"
    assert Session.from_token(str(wrote["token"])).min_version("posts", str(wrote["id"])) == 2


def test_a_session_on_a_strong_only_collection_reads_strongly(server: ServerProcess) -> None:
    with Client(server.url) as api:
        stock = api.collection("stock")
        item = stock.create({"n": 1})
        got = stock.get(item.id)  # the session knows v1: min_version is refused here, strong is not
        assert got.version == 1 and got.consistency == "strong"


def test_session_tokens_refuse_garbage() -> None:
    for bad in ("", "mxs1.!!!", "mxs1.bnVsbA", "mxs1." + "eyJwIjoiLTEifQ"):
        with pytest.raises(ValueError):
            Session.from_token(bad)


# -- retries ------------------------------------------------------------------------------


def test_a_write_whose_answer_was_lost_is_retried_and_applied_once(server: ServerProcess) -> None:
    marker = uuid.uuid4().hex
    retries, on_retry = recording()
    with DroppingProxy(server.port) as proxy, Client(proxy.url, on_retry=on_retry) as api:
        proxy.drop_answers(1)
        post = api.collection("posts").create({"title": "once", "tag": marker})
        assert proxy.dropped == 1
    assert post.replayed, "the retry was answered from the first attempt's stored outcome"
    assert [r[2] for r in retries] == ["RemoteProtocolError"]
    with Client(server.url) as api:
        mine = list(api.collection("posts").documents(tag=marker, consistency="strong"))
    assert [(d.id, d.version) for d in mine] == [(post.id, 1)]


def test_without_retries_a_lost_answer_is_a_connection_failure(server: ServerProcess) -> None:
    with (
        DroppingProxy(server.port) as proxy,
        Client(proxy.url, retry=RetryPolicy(attempts=1)) as api,
    ):
        proxy.drop_answers(1)
        with pytest.raises(ConnectionFailed) as caught:
            api.collection("posts").create({"title": "lost"})
    assert caught.value.status == 0 and caught.value.code == "unavailable"


def test_429_is_retried_after_retry_after(server: ServerProcess) -> None:
    retries, on_retry = recording()
    with Client(server.url, on_retry=on_retry) as api:
        limited = api.collection("limited")
        doc = limited.create({"n": 1})  # POST is not limited; GET is 1/s, burst 1
        started = time.monotonic()
        limited.get(doc.id)
        limited.get(doc.id)  # over the limit: 429 Retry-After: 1, then passes
        elapsed = time.monotonic() - started
    assert [(n, reason) for n, _, reason in retries] == [(1, "HTTP 429")]
    assert retries[0][1] >= 1.0 and elapsed >= 1.0


def test_422_is_never_retried(server: ServerProcess) -> None:
    retries, on_retry = recording()
    with (
        Client(server.url, on_retry=on_retry) as api,
        pytest.raises(ValidationFailed) as caught,
    ):
        api.collection("posts").create({"title": ""})
    assert retries == []
    problem = caught.value
    assert (problem.status, problem.code) == (422, "validation_failed")
    assert [e.pointer for e in problem.errors] == ["/title"]
    assert problem.request_id


# -- deadline, conditions, pages, problems -----------------------------------------------


def test_the_deadline_reaches_the_server(tmp_path: Path) -> None:
    slow = serve(tmp_path, env={"MAXAGE_TEST_SLOW_STORE_SECONDS": "5"})
    try:
        with Client(slow.url, timeout=1.0) as api, pytest.raises(DeadlineExceeded) as caught:
            api.collection("posts").get("nope")
        # The server's own 504 (with its request id), not a client-side timeout: it was told.
        assert (caught.value.status, caught.value.code) == (504, "deadline_exceeded")
        assert caught.value.request_id
    finally:
        slow.kill()


def test_conditional_update_gets_412_with_the_current_version(server: ServerProcess) -> None:
    with Client(server.url) as api:
        posts = api.collection("posts")
        post = posts.create({"title": "a"})
        posts.update(post.id, {"title": "b"}, expected_version=1)
        with pytest.raises(PreconditionFailed) as caught:
            posts.update(post.id, {"title": "c"}, expected_version=1)
        assert caught.value.current_version == 2
        assert posts.get(post.id, consistency="strong").data["title"] == "b"
        assert posts.delete(post.id, expected_version=2) == 3
        with pytest.raises(NotFound) as gone:
            posts.get(post.id)
        assert gone.value.code == "document_not_found"


def test_the_page_iterator_follows_every_page_and_passes_query_parameters(
    server: ServerProcess,
) -> None:
    with Client(server.url) as api:
        posts = api.collection("posts")
        made = {posts.create({"title": f"p{i}"}).id for i in range(7)}
        pages = list(posts.pages(page_size=3))
        assert all(len(p.items) <= 3 for p in pages) and pages[-1].next_page_token == ""
        listed = [d.id for p in pages for d in p.items]
        assert made <= set(listed) and len(listed) == len(set(listed))
        assert [d.id for d in posts.documents(page_size=2)] == listed
        with pytest.raises(InvalidRequest) as unknown:  # parameters go to the server as given
            posts.list(params={"no_such_field": "x"})
        assert unknown.value.parameter == "no_such_field"
        # ... so do list queries: a filter, a sort, fields and a count, across pages.
        tag = uuid.uuid4().hex
        tagged = [posts.create({"title": f"t{i}", "tag": tag}).id for i in range(3)]
        first = posts.list(page_size=2, tag=tag, count="exact", consistency="strong")
        assert first.total == 3 and len(first.items) == 2
        found = posts.documents(page_size=2, params={"tag": f"in.({tag},zzz)", "fields": "title"})
        assert sorted(d.id for d in found) == sorted(tagged)


def test_bearer_keys(tmp_path: Path) -> None:
    server = serve(tmp_path, "--auth", "keys")
    try:
        created = subprocess.run(
            python_m("keys", "create", "--db", f"sqlite:///{tmp_path}/db.sqlite", "--scopes", "read:*,write:*"),
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        secret = created.stdout.strip().splitlines()[-1]
        with Client(server.url) as anonymous, pytest.raises(Unauthenticated) as caught:
            anonymous.collection("posts").create({"title": "x"})
        assert (caught.value.status, caught.value.code) == (401, "unauthenticated")
        with Client(server.url, api_key=secret) as api:
            post = api.collection("posts").create({"title": "x"})
            assert api.collection("posts").get(post.id).version == 1
        assert server.stop() == 0
    finally:
        server.kill()


async def test_the_async_client_does_the_same(server: ServerProcess) -> None:
    async with AsyncClient(server.url) as api:
        posts = api.collection("posts")
        post = await posts.create({"title": "async"})
        post = await posts.update(post.id, {"tag": "t"}, expected_version=post.version)
        got = await posts.get(post.id)
        assert (got.version, got.consistency, got.data) == (
            2,
            "session",
            {"title": "async", "tag": "t"},
        )
        with pytest.raises(PreconditionFailed):
            await posts.update(post.id, {"tag": "u"}, expected_version=1)
        listed = [d.id async for d in posts.documents(page_size=2)]
        assert post.id in listed
        changes = [c async for c in posts.changes()]
        assert (post.id, 2, "put") in [(c.id, c.version, c.op) for c in changes]


def test_the_change_feed_resumes_after_a_cursor(server: ServerProcess) -> None:
    with Client(server.url) as api:
        posts = api.collection("posts")
        everything = list(posts.changes())
        post = posts.create({"title": "feed"})
        after = list(posts.changes(after=everything[-1].cursor if everything else None))
        assert [(c.id, c.version, c.op) for c in after][-1] == (post.id, 1, "put")


# -- increments and write-back -----------------------------------------------------------


def test_increments_and_a_write_back_collection(server: ServerProcess) -> None:
    with Client(server.url) as api:
        posts = api.collection("posts")
        post = posts.create({"title": "counted"})
        liked = posts.increment(post.id, "likes", 2, expected_version=1)
        assert (liked.version, liked.data["likes"], liked.consistency) == (2, 2, "strong")
        # A write-back collection refuses Idempotency-Key: the client learns it on the first
        # write, sends that write again without one, and sends none from then on.
        counters = api.collection("counters")
        counter = counters.create({"views": 0})
        acked = [counters.increment(counter.id, "/views") for _ in range(3)]
        assert {a.consistency for a in acked} == {"write-back"}
        assert acked[-1].data["views"] == 3

        def flushed() -> bool:
            return counters.get(counter.id, consistency="strong").data["views"] == 3

        wait_for(flushed, "the buffered increments to be flushed")


def test_a_write_without_idempotency_key_is_not_retried_after_a_lost_answer(
    server: ServerProcess,
) -> None:
    """A write-back increment carries no key: sent twice it would count twice. A connection
    lost after the request was sent is therefore reported, not retried."""
    retries, on_retry = recording()
    with Client(server.url) as api:
        counters = api.collection("counters")
        counter = counters.create({"views": 0})
    with (
        DroppingProxy(server.port) as proxy,
        # one connection per request, so the proxy's next connection is the next request
        Client(proxy.url, on_retry=on_retry, headers={"connection": "close"}) as api,
    ):
        counters = api.collection("counters")
        counters.increment(counter.id, "views")  # learns that counters is write-back
        proxy.drop_answers(1)
        with pytest.raises(ConnectionFailed):
            counters.increment(counter.id, "views")
    assert retries == []
    with Client(server.url) as api:
        counters = api.collection("counters")
        wait_for(
            lambda: counters.get(counter.id, consistency="strong").data["views"] == 2,
            "both increments, each once, to be flushed",
        )


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll until ``predicate()`` (a condition wait on the server's flush, not a sleep)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


async def test_the_async_client_retries_a_lost_answer_once(server: ServerProcess) -> None:
    retries, on_retry = recording()
    with DroppingProxy(server.port) as proxy:
        async with AsyncClient(proxy.url, on_retry=on_retry) as api:
            proxy.drop_answers(1)
            post = await api.collection("posts").create({"title": "async once"})
    assert post.replayed and [r[2] for r in retries] == ["RemoteProtocolError"]
    with Client(server.url) as api:
        assert api.collection("posts").get(post.id, consistency="strong").version == 1


def test_following_the_change_feed(server: ServerProcess) -> None:
    with Client(server.url) as api:
        posts = api.collection("posts")
        before = list(posts.changes())
        post = posts.create({"title": "followed"})
        after = before[-1].cursor if before else None
        for change in posts.changes(after=after, follow=True):  # an open stream
            if change.id == post.id:
                break
        assert (change.id, change.version, change.op) == (post.id, 1, "put")


def test_a_batch_commits_together_or_not_at_all(server: ServerProcess) -> None:
    with Client(server.url) as api:
        posts = api.collection("posts")
        a, b = posts.create({"title": "a"}), posts.create({"title": "b"})
        done = posts.batch([
            {"op": "create", "data": {"title": "c"}},
            {"op": "patch", "id": a.id, "data": {"title": "a2"}, "if_match": 1},
            {"op": "delete", "id": b.id},
        ])  # fmt: skip
        assert [(r.op, r.status, r.version) for r in done] == [
            ("create", 201, 1),
            ("patch", 200, 2),
            ("delete", 204, 2),
        ]
        assert done[1].document is not None and done[1].document.data["title"] == "a2"
        assert done[2].document is None
        with pytest.raises(PreconditionFailed) as refused:
            posts.batch([
                {"op": "patch", "id": done[0].id, "data": {"title": "c2"}},
                {"op": "patch", "id": a.id, "data": {"title": "a3"}, "if_match": 1},
            ])  # fmt: skip
        assert refused.value.problem.get("operation") == 1
        assert posts.get(done[0].id, consistency="strong").version == 1  # nothing was written


def test_a_named_consumer_resumes_after_what_it_acknowledged(server: ServerProcess) -> None:
    name = "reader-" + uuid.uuid4().hex[:8]
    with Client(server.url) as api:
        posts = api.collection("posts")
        seen = list(posts.changes(consumer=name))
        if seen:
            posts.ack(name, seen[-1].cursor)
        post = posts.create({"title": "for the consumer"})
        fresh = list(posts.changes(consumer=name, params={"include": "doc"}))
        assert [(c.id, c.version, c.data) for c in fresh] == [
            (post.id, 1, {"title": "for the consumer"})
        ]
        posts.ack(name, fresh[-1].cursor)
        posts.ack(name, fresh[-1].cursor)  # again: positions only rise, a retry is harmless
        assert list(posts.changes(consumer=name)) == []
