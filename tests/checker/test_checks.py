"""The checks on hand-made histories: each planted anomaly is flagged; a clean one passes."""

from __future__ import annotations

from maxage.checker.checks import HTTP_AGE_SLACK, check
from maxage.checker.history import FAIL, OK, UNKNOWN, Op

B = {"c": 1.0}


def w(i: int, kind: str, v: int | None, t0: float, t1: float, *, tok: str | None = None,
      outcome: str = OK, if_match: int | None = None, h: str | None = None, cl: int = 1) -> Op:  # fmt: skip
    return Op(i, cl, kind, "c", "k", invoke=t0, ret=t1, outcome=outcome, version=v,
              token=tok or f"t{i}", if_match=if_match, body_hash=h or f"h{i}",
              status=200 if outcome == OK else 412)  # fmt: skip


def r(i: int, mode: str, v: int | None, t0: float, t1: float, tok: str, h: str, *,
      min_version: int | None = None, phase: str = "run", cl: int = 2) -> Op:  # fmt: skip
    return Op(i, cl, "read", "c", "k", mode=mode, invoke=t0, ret=t1, version=v, token=tok,
              body_hash=h, status=200 if v else 404, min_version=min_version, phase=phase)  # fmt: skip


def base() -> list[Op]:
    return [w(1, "create", 1, 0.0, 0.1), w(2, "patch", 2, 1.0, 1.1, if_match=1)]


def props(ops: list[Op]) -> set[str]:
    return {v.prop for v in check(ops, B).violations}


def test_clean_history_passes() -> None:
    ops = base() + [
        r(3, "bounded", 1, 1.5, 1.6, "t1", "h1"),  # within the bound after v2's ack
        r(4, "strong", 2, 1.2, 1.3, "t2", "h2"),
        r(5, "session", 2, 1.4, 1.5, "t2", "h2", min_version=2),
        r(6, "bounded", 2, 5.0, 5.1, "t2", "h2"),
    ]
    assert props(ops) == set()


def test_stale_bounded_read_is_flagged() -> None:
    assert "P2" in props([*base(), r(3, "bounded", 1, 3.0, 3.1, "t1", "h1")])


def aged(age: float, t0: float) -> set[str]:
    """A bounded read of v1 at ``t0`` (v2 was acknowledged at 1.1) claiming ``age``,
    checked as ``maxage check`` checks an HTTP ``Age`` (whole seconds, rounded down)."""
    read = r(3, "bounded", 1, t0, t0 + 0.01, "t1", "h1")
    read.age = age
    return {v.prop for v in check([*base(), read], {"c": 5.0}, age_slack=HTTP_AGE_SLACK).violations}


def test_http_age_rounded_down_is_not_flagged() -> None:
    """v1 was current until 1.0 (v2's write was invoked then): a read at 1.9 answered
    from an entry known current at 0.95 is 0.95 s old, which HTTP says as ``Age: 0``."""
    assert aged(0.0, 1.9) == set()
    assert aged(1.0, 2.9) == set()  # 1.95 s, said as 1


def test_http_age_understated_past_its_rounding_is_flagged() -> None:
    """``Age: 0`` at 2.2 claims v1 current after 1.2 (whole seconds, rounded down): v2
    was acknowledged at 1.1, so the answer's age was measured from too late a point
    (``ttl-from-set``: from the fill's store instead of its primary read)."""
    assert aged(0.0, 2.2) == {"P2"}
    assert aged(1.0, 3.2) == {"P2"}


def test_future_read_is_flagged() -> None:
    ops = [w(1, "create", 1, 0.0, 0.1), w(2, "patch", 2, 2.0, 2.1, if_match=1),
           r(3, "bounded", 2, 1.0, 1.5, "t2", "h2")]  # fmt: skip
    assert "P1" in props(ops)


def test_torn_body_is_flagged() -> None:
    assert "P0" in props([*base(), r(3, "bounded", 2, 1.2, 1.3, "t2", "other")])


def test_a_read_without_a_body_hash_is_not_compared() -> None:
    """maxage sim's document reads record no hash; its list pages and writes do."""
    unhashed = r(3, "bounded", 2, 1.2, 1.3, "t2", "h2")
    unhashed.body_hash = None
    assert props([*base(), unhashed, r(4, "bounded", 2, 1.4, 1.5, "t2", "h2")]) == set()
    assert "P0" in props([*base(), unhashed, r(4, "bounded", 2, 1.4, 1.5, "t2", "other")])


def test_phantom_data_is_flagged() -> None:
    assert "P0" in props([*base(), r(3, "bounded", 2, 1.2, 1.3, "nobody", "h2")])


def test_failed_write_visible_is_flagged() -> None:
    ops = base() + [w(3, "patch", None, 1.2, 1.3, outcome=FAIL, if_match=1),
                    r(4, "strong", 3, 1.4, 1.5, "t3", "h3")]  # fmt: skip
    assert "P0" in props(ops)


def test_stale_strong_read_is_flagged() -> None:
    assert "P3" in props([*base(), r(3, "strong", 1, 1.2, 1.3, "t1", "h1")])


def test_non_linearizable_strong_reads_are_flagged() -> None:
    # v2 is read, then (strictly later) v1 again: no linearization exists
    ops = [w(1, "create", 1, 0.0, 0.1), w(2, "patch", 2, 1.0, 3.0, if_match=1),
           r(3, "strong", 2, 1.1, 1.2, "t2", "h2"), r(4, "strong", 1, 1.3, 1.4, "t1", "h1")]  # fmt: skip
    assert "P3" in props(ops)


def test_session_read_below_min_version_is_flagged() -> None:
    assert "P4" in props([*base(), r(3, "session", 1, 1.2, 1.3, "t1", "h1", min_version=2)])


def test_broken_if_match_chain_is_flagged() -> None:
    ops = [*base(), w(3, "patch", 4, 1.5, 1.6, if_match=2)]
    assert "P5" in props(ops)


def test_lost_update_is_flagged() -> None:
    ops = [*base(), w(3, "put", 2, 1.5, 1.6)]
    assert "P5" in props(ops)


def test_no_convergence_is_flagged() -> None:
    ops = base() + [r(3, "strong", 2, 9.0, 9.1, "t2", "h2", phase="final"),
                    r(4, "bounded", 1, 9.2, 9.3, "t1", "h1", phase="final")]  # fmt: skip
    assert "P6" in props(ops)


def test_p8_flags_a_request_accepted_after_the_revoke_was_acknowledged() -> None:
    from maxage.checker.checks import check as run_checks
    from maxage.checker.history import Op as HOp
    from maxage.checker.revocation import AUTH_READ, REVOKE

    revoke = HOp(1, 0, REVOKE, "c", "k1", invoke=0.8, ret=1.0, status=204)
    before = HOp(2, 9, AUTH_READ, "c", "k1", invoke=0.9, ret=1.05, status=200)  # began before
    refused = HOp(3, 9, AUTH_READ, "c", "k1", invoke=1.1, ret=1.2, status=401)
    other_key = HOp(4, 9, AUTH_READ, "c", "k2", invoke=1.1, ret=1.2, status=200)
    assert run_checks([revoke, before, refused, other_key], {"c": 1.0}).violations == []
    late = HOp(5, 9, AUTH_READ, "c", "k1", invoke=1.01, ret=1.1, status=200)
    found = run_checks([revoke, before, refused, late], {"c": 1.0}).violations
    assert [v.prop for v in found] == ["P8"] and found[0].ops == [revoke, late]


def test_p8_flags_a_read_accepted_after_a_scope_change_took_its_scope_away() -> None:
    """A scope change that took away ``read:c`` cuts reads of ``c`` only, from its
    acknowledgement on; the earliest acknowledgement of a key's revoke counts."""
    from maxage.checker.checks import check as run_checks
    from maxage.checker.history import Op as HOp
    from maxage.checker.revocation import AUTH_READ, RESCOPE, REVOKE

    cut = HOp(1, 0, RESCOPE, "c", "k1", invoke=0.5, ret=1.0, status=200)
    other = HOp(2, 9, AUTH_READ, "d", "k1", invoke=1.5, ret=1.6, status=200)  # still allowed
    refused = HOp(3, 9, AUTH_READ, "c", "k1", invoke=1.5, ret=1.6, status=403)
    assert run_checks([cut, other, refused], {"c": 1.0, "d": 1.0}).violations == []
    late = HOp(4, 9, AUTH_READ, "c", "k1", invoke=1.2, ret=1.3, status=200)
    found = run_checks([cut, other, late], {"c": 1.0, "d": 1.0}).violations
    assert [v.prop for v in found] == ["P8"] and found[0].ops == [cut, late]
    first = HOp(5, 0, REVOKE, "d", "k1", invoke=1.0, ret=2.0, status=204)
    again = HOp(6, 0, REVOKE, "d", "k1", invoke=1.0, ret=3.0, status=204)
    use = HOp(7, 9, AUTH_READ, "d", "k1", invoke=2.5, ret=2.6, status=200)
    found = run_checks([again, first, use], {"c": 1.0, "d": 1.0}).violations
    assert [v.ops for v in found] == [[first, use]]
    # within the stated slack (clock skew), not a violation
    assert run_checks([again, first, use], {"d": 1.0}, revocation_slack=0.6).violations == []


def page(i: int, mode: str, t0: float, t1: float, shown: dict[str, list[object]], *,
         covered_to: str | None = None, version: int = 5, min_version: int | None = None) -> Op:  # fmt: skip
    return Op(i, 3, "list", "c", mode=mode, invoke=t0, ret=t1, outcome=OK, status=200,
              page=shown, covered_to=covered_to, version=version, min_version=min_version)  # fmt: skip


def test_a_clean_page_passes() -> None:
    ops = [*base(), page(3, "bounded", 1.5, 1.6, {"k": [1, "t1", "h1"]}),
           page(4, "bounded", 5.0, 5.1, {"k": [2, "t2", "h2"]}),
           page(5, "strong", 1.2, 1.3, {"k": [2, "t2", "h2"]})]  # fmt: skip
    assert props(ops) == set()


def test_a_page_showing_an_old_version_is_flagged() -> None:
    assert "P2" in props([*base(), page(3, "bounded", 3.0, 3.1, {"k": [1, "t1", "h1"]})])


def test_a_page_omitting_a_document_is_flagged() -> None:
    assert "P2" in props([*base(), page(3, "bounded", 3.0, 3.1, {})])
    # ... unless the document lies beyond the page (more pages follow)
    assert props([*base(), page(3, "bounded", 3.0, 3.1, {}, covered_to="a")]) == set()


def test_a_strong_page_omitting_a_document_is_flagged() -> None:
    assert "P3" in props([*base(), page(3, "strong", 1.2, 1.3, {"k": [1, "t1", "h1"]})])


def test_a_torn_page_is_flagged() -> None:
    assert "P0" in props([*base(), page(3, "bounded", 5.0, 5.1, {"k": [2, "t2", "other"]})])


def test_a_session_page_below_its_floor_is_flagged() -> None:
    ops = [*base(), page(3, "session", 5.0, 5.1, {"k": [2, "t2", "h2"]}, min_version=6)]
    assert props(ops) == {"P4"}


def test_a_document_made_by_a_post_whose_answer_was_lost_is_its_writers() -> None:
    """A POST that timed out may have committed: a read (of a list page, say) that finds
    its token under the id the server chose is that POST's effect, not foreign data."""
    lost = Op(1, 1, "post", "c", "", invoke=0.0, ret=5.0, outcome=UNKNOWN, token="t1")
    ops = [lost, Op(2, 2, "read", "c", "srv-id", mode="bounded", invoke=6.0, ret=6.1,
                    version=1, token="t1", body_hash="h1", status=200)]  # fmt: skip
    assert props(ops) == set()
    other = Op(3, 1, "put", "c", "k", invoke=0.0, ret=0.1, outcome=OK, version=1, token="t3",
               body_hash="h3", status=200)  # fmt: skip
    wrong = Op(4, 2, "read", "c", "srv-id", mode="bounded", invoke=6.0, ret=6.1, version=1,
               token="t3", body_hash="h3", status=200)  # fmt: skip
    assert "P0" in props([other, wrong])
