"""The report: text for people, JSON for machines."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from maxage.checker.checks import PROPERTIES, TITLES, Result
from maxage.checker.feed import CHANGE
from maxage.checker.history import FAULT, Op
from maxage.checker.revocation import counts as revocation_counts


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    i = min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))
    return s[i]


def build_report(
    ops: Sequence[Op],
    res: Result,
    *,
    bounds: dict[str, float],
    seed: int,
    duration: float,
    faults_requested: Sequence[str],
    server_faults: dict[str, Any] | None,
    target: str,
    mutant: str | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    real = [o for o in ops if o.kind not in (FAULT, CHANGE)]
    kinds = Counter(o.kind + ("-replay" if o.replay else "") for o in real)
    outcomes = Counter(o.outcome for o in real)
    modes = Counter(o.mode for o in real if o.kind == "read")
    tiers = Counter(o.tier or ("404" if o.status == 404 else "-") for o in real if o.kind == "read")
    phases: Counter[str] = Counter()
    for o in ops:
        if o.kind == FAULT:
            for name in o.faults:
                phases[name] += 1
    by_prop = res.by_property()
    staleness: dict[str, Any] = {}
    for mode, secs in sorted(res.staleness_seconds.items()):
        vers = res.staleness_versions.get(mode, [])
        staleness[mode] = {
            "reads": len(secs),
            "seconds": {
                "p50": percentile(secs, 0.5),
                "p90": percentile(secs, 0.9),
                "p99": percentile(secs, 0.99),
                "p999": percentile(secs, 0.999),
                "max": max(secs) if secs else math.nan,
                "stale_reads": sum(1 for s in secs if s > 0),
            },
            "versions_behind": {
                str(k): n for k, n in sorted(Counter(min(v, 3) for v in vers).items())
            },
        }
    revoked = revocation_counts(ops)
    return {
        "revocation": revoked,
        "target": target,
        "seed": seed,
        "duration_s": round(duration, 3),
        "mutant": mutant,
        "collections": {k: {"max_staleness_s": v} for k, v in sorted(bounds.items())},
        "operations": len(real),
        "by_kind": dict(sorted(kinds.items())),
        "by_outcome": dict(sorted(outcomes.items())),
        "reads_by_mode": {str(k): n for k, n in sorted(modes.items(), key=lambda x: str(x[0]))},
        "reads_by_tier": dict(sorted(tiers.items())),
        "race_exposed": res.race_exposed,
        "faults": {
            "requested": list(faults_requested),
            "phases_enabled": dict(sorted(phases.items())),
            "injected": (server_faults or {}).get("counts", {}),
        },
        "violations": {
            p: {
                "title": TITLES[p],
                "count": len(by_prop[p]),
                "first": [v.to_json() for v in by_prop[p][:3]],
            }
            for p in PROPERTIES
        },
        "violation_count": len(res.violations),
        "unknowns": res.unknowns[:50],
        "unknown_count": len(res.unknowns) + outcomes.get("unknown", 0),
        "linearizability": {"keys": res.lin_keys, "linearizable": res.lin_ok},
        "staleness": staleness,
        "notes": list(notes),
        "verdict": "violation" if res.violations else "ok",
    }


def render_text(rep: dict[str, Any]) -> str:
    lines = [
        f"maxage check: {rep['target']}  seed {rep['seed']}  {rep['duration_s']:.1f}s"
        + (f"  MUTANT {rep['mutant']}" if rep.get("mutant") else ""),
        f"operations      {rep['operations']}  ({_kv(rep['by_kind'])})",
        f"outcomes        {_kv(rep['by_outcome'])}",
        f"reads by mode   {_kv(rep['reads_by_mode'])};  by tier {_kv(rep['reads_by_tier'])}",
        f"race-exposed    {rep['race_exposed']} reads (overlap a write or start within the bound after one)",
        f"revocation      {rep['revocation']['revokes']} keys revoked while in use; "
        f"{rep['revocation']['requests_with_revoked_keys']} requests started after an "
        f"acknowledged revoke, {rep['revocation']['refused_401']} refused (401)",
        f"faults          phases {_kv(rep['faults']['phases_enabled']) or '-'}",
        f"                injected {_kv({k: v for k, v in rep['faults']['injected'].items() if v}) or '-'}",
        *_targeted_lines(rep),
        f"linearizability {rep['linearizability']['linearizable']}/{rep['linearizability']['keys']} keys; "
        f"unknowns {rep['unknown_count']}",
        "staleness (time since a newer version was acknowledged; versions behind):",
    ]
    for mode, st in rep["staleness"].items():
        s = st["seconds"]
        lines.append(
            f"  {mode:8s} n={st['reads']:<7d} p50={s['p50']:.3f}s p99={s['p99']:.3f}s "
            f"max={s['max']:.3f}s stale={s['stale_reads']}  behind {_kv(st['versions_behind'])}"
        )
    feed = rep.get("feed")
    if feed:
        lines.append(f"change feed     {feed['changes']} changes over {feed['connections']} "
                     f"connections (each dropped and resumed); errors {feed['errors']}")  # fmt: skip
    lines.append("properties:")
    for p, v in rep["violations"].items():
        mark = "ok" if v["count"] == 0 else f"VIOLATED x{v['count']}"
        lines.append(f"  {p} {v['title']:26s} {mark}")
        for first in v["first"]:
            lines.append(f"      - {first['message']}")
            for op in first["ops"][:3]:
                lines.append(f"          {_op_line(op)}")
    if rep.get("stopped_at_s") is not None:
        lines.append(f"stopped at the first violation, found {rep['stopped_at_s']:.1f}s into "
                     "the workload (--keep-going collects all)")  # fmt: skip
    for note in rep["notes"]:
        lines.append(f"note: {note}")
    lines.append(f"verdict: {rep['verdict'].upper()}")
    return "\n".join(lines)


def _targeted_lines(rep: dict[str, Any]) -> list[str]:
    t = rep.get("targeted")
    if not t or not t["rounds"]:
        return []
    return [
        f"targeted        {t['rounds']} rounds ({', '.join(t['scenarios'])}): {t['holds']} fills "
        f"held past a newer invalidation ({t['hold_misses']} missed), {t['lost_deliveries']} "
        f"lost deliveries, {t['stalled_writes']} writes under a stalled tailer, "
        f"{t.get('aged_fills', 0)} fills released after their key's write, "
        f"{t.get('shared_fills', 0)} shared-tier fills held past it; "
        f"{t['reads_past_bound']} reads past the bound ({t['lagging']} lagging)"
    ]


def _op_line(op: dict[str, Any]) -> str:
    keys = ("id", "client", "kind", "mode", "collection", "key", "invoke", "ret", "outcome", "status",
            "version", "if_match", "min_version", "tier", "token", "idem_key", "replay", "phase")  # fmt: skip
    return " ".join(
        f"{k}={round(op[k], 4) if isinstance(op[k], float) else op[k]}" for k in keys if k in op
    )


def _kv(d: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in d.items())
