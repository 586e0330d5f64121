"""The service's metric families (cache, tailer, store, shared tier, consistency monitor),
rendered per scrape into the one exposition format of :mod:`maxage.core.metrics`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from maxage.core.metrics import Exposition, labels

if TYPE_CHECKING:
    from maxage.invalidation.monitor import ConsistencyMonitor
    from maxage.service.consumers import Lag
    from maxage.service.service import Service
    from maxage.service.writeback import WriteBack


def collect(service: Service, out: Exposition) -> None:
    """The service's families. (Long: the families in exposition order; each block reads
    one component's counters.)"""
    cache = service.cache
    st = service.reads.stats
    cs = cache.stats

    out.family("maxage_cache_hits_total", "counter", "Reads served from a cache tier.")
    for tier, n in st.hits.items():
        out.sample("maxage_cache_hits_total", n, labels(tier=tier))
    out.family("maxage_cache_misses_total", "counter", "Cacheable reads that went to the primary.")
    out.sample("maxage_cache_misses_total", st.misses)
    out.family(
        "maxage_cache_bypasses_total",
        "counter",
        "Reads that skipped the caches, by reason (lagging = tailer behind the bound).",
    )
    for reason, n in st.bypasses.items():
        out.sample("maxage_cache_bypasses_total", n, labels(reason=reason))
    out.family("maxage_cache_fills_total", "counter", "Cache fills by outcome.")
    for outcome, n in sorted(st.fills.items()):
        out.sample("maxage_cache_fills_total", n, labels(outcome=outcome))
    out.family("maxage_cache_evictions_total", "counter", "In-process cache evictions by reason.")
    for eviction, n in cs.evictions.items():
        out.sample("maxage_cache_evictions_total", n, labels(reason=eviction.value))
    out.family(
        "maxage_cache_bytes", "gauge", "Bytes held by the in-process cache (bodies + overhead)."
    )
    out.sample("maxage_cache_bytes", cache.bytes_used)
    out.family("maxage_cache_max_bytes", "gauge", "Byte bound of the in-process cache.")
    out.sample("maxage_cache_max_bytes", cache.max_bytes)
    out.family("maxage_cache_entries", "gauge", "Entries in the in-process cache.")
    out.sample("maxage_cache_entries", len(cache))

    tailer = service.tailer
    out.family(
        "maxage_tailer_lag_seconds",
        "gauge",
        "Seconds since the oldest holder watermark: changes older than this are applied.",
    )
    out.sample("maxage_tailer_lag_seconds", round(tailer.lag(), 6))
    out.family("maxage_tailer_watermark_seconds", "gauge", "Watermark per holder (unix seconds).")
    for hs in tailer.states:
        out.sample(
            "maxage_tailer_watermark_seconds", hs.holder.watermark, labels(holder=hs.holder.name)
        )
    out.family(
        "maxage_tailer_pending_invalidations", "gauge", "Failed invalidations being retried."
    )
    for hs in tailer.states:
        out.sample(
            "maxage_tailer_pending_invalidations", len(hs.pending), labels(holder=hs.holder.name)
        )
    out.family("maxage_tailer_invalidation_failures_total", "counter", "Invalidations that failed.")
    for hs in tailer.states:
        out.sample(
            "maxage_tailer_invalidation_failures_total", hs.failures, labels(holder=hs.holder.name)
        )
    out.family("maxage_tailer_poll_errors_total", "counter", "Change-log polls that failed.")
    out.sample("maxage_tailer_poll_errors_total", tailer.poll_errors)

    ss = service.store.stats
    out.family("maxage_store_operations_total", "counter", "Primary store operations.")
    for op, n in sorted(ss.ops.items()):
        out.sample("maxage_store_operations_total", n, labels(op=op))
    out.family("maxage_store_errors_total", "counter", "Primary store operations that failed.")
    for op, n in sorted(ss.errors.items()):
        out.sample("maxage_store_errors_total", n, labels(op=op))
    out.family("maxage_store_operation_seconds_total", "counter", "Time spent in store operations.")
    for op, secs in sorted(ss.seconds.items()):
        out.sample("maxage_store_operation_seconds_total", round(secs, 6), labels(op=op))

    if service.l2 is not None:
        out.family("maxage_l2_events_total", "counter", "Shared tier (Redis) events.")
        for event, n in sorted(service.l2.stats.items()):
            out.sample("maxage_l2_events_total", n, labels(event=event))
        out.family("maxage_l2_available", "gauge", "1 while the shared tier's circuit is closed.")
        out.sample("maxage_l2_available", 1 if service.l2.available else 0)

    access = service.access
    if access.enabled:
        out.family(
            "maxage_auth_primary_lookups_total",
            "counter",
            "Key records read from the primary (not cached, or the tailer behind the bound A).",
        )
        out.sample("maxage_auth_primary_lookups_total", access.primary_lookups)
        out.family("maxage_auth_refused_total", "counter", "Requests refused by access control.")
        for reason, n in sorted(access.refused.items()):
            out.sample("maxage_auth_refused_total", n, labels(reason=reason))
    limits = service.limits
    if limits.enabled:
        out.family("maxage_rate_limited_total", "counter", "Requests answered 429.")
        out.sample("maxage_rate_limited_total", limits.limited)
        out.family(
            "maxage_rate_limit_fallbacks_total",
            "counter",
            "Limit decisions made per process because the shared tier was unavailable.",
        )
        out.sample("maxage_rate_limit_fallbacks_total", limits.fallbacks)

    monitor = service.monitor
    if monitor is not None:
        _consistency(monitor, out)
    if service.writeback.enabled:
        _writeback(service.writeback, out)
    _consumers(service.consumers.lags, out)
    webhooks = service.webhooks
    if webhooks.subscriptions:
        out.family(
            "maxage_webhook_deliveries_total",
            "counter",
            "Webhook delivery outcomes by this process: delivered, failed (one attempt), "
            "deadlettered, replayed.",
        )
        for (collection, name, outcome), n in sorted(webhooks.stats.outcomes.items()):
            out.sample(
                "maxage_webhook_deliveries_total",
                n,
                labels(collection=collection, subscription=name, outcome=outcome),
            )


def _consistency(monitor: ConsistencyMonitor, out: Exposition) -> None:
    """The in-service monitor (docs/consistency.md "In-service monitor")."""
    tallies = sorted(monitor.tallies.items())
    out.family(
        "maxage_consistency_checked_total",
        "counter",
        "Sampled cache hits checked against the primary's change log.",
    )
    for name, t in tallies:
        out.sample("maxage_consistency_checked_total", t.checked, labels(collection=name))
    out.family(
        "maxage_consistency_violations_total",
        "counter",
        "Checked hits that served a version older than one committed more than the bound before.",
    )
    for name, t in tallies:
        out.sample("maxage_consistency_violations_total", t.violations, labels(collection=name))
    out.family(
        "maxage_consistency_staleness_seconds",
        "histogram",
        "Per checked hit: how long before the hit a newer version had been committed (0: none).",
    )
    # A tally is the collection's staleness histogram itself.
    out.histogram(
        "maxage_consistency_staleness_seconds",
        ((labels(collection=name), t) for name, t in tallies),
    )
    out.family(
        "maxage_consistency_dropped_total",
        "counter",
        "Sampled hits not checked because the monitor's queue was full.",
    )
    out.sample("maxage_consistency_dropped_total", monitor.dropped)
    out.family(
        "maxage_consistency_errors_total", "counter", "Checks that failed (primary unavailable)."
    )
    out.sample("maxage_consistency_errors_total", monitor.errors)
    out.family("maxage_consistency_pending", "gauge", "Sampled hits waiting to be checked.")
    out.sample("maxage_consistency_pending", len(monitor.pending))
    out.family("maxage_consistency_sample_every", "gauge", "One cache hit in this many is checked.")
    out.sample("maxage_consistency_sample_every", monitor.sample_every)


def _writeback(writeback: WriteBack, out: Exposition) -> None:
    """Write-back buffers (docs/consistency.md "Write-back"): every acknowledged write is
    eventually flushed, dropped (counted with its reason) or pending."""
    stats = writeback.stats
    names = [s.name for s in writeback.specs]
    for family, help_, values in (
        ("maxage_writeback_acknowledged_total", "Writes acknowledged from the buffer.",
         stats.acknowledged),
        ("maxage_writeback_flushed_total", "Acknowledged writes committed by a flush.",
         stats.flushed),
        ("maxage_writeback_flushes_total", "Flush transactions committed.", stats.flushes),
        ("maxage_writeback_flush_failures_total", "Flushes the primary refused (kept, retried).",
         stats.failures),
    ):  # fmt: skip
        out.family(family, "counter", help_)
        for name in names:
            out.sample(family, values.get(name, 0), labels(collection=name))
    out.family(
        "maxage_writeback_dropped_total",
        "counter",
        "Acknowledged writes dropped at the flush (the document was gone, or the write no "
        "longer applied to it).",
    )
    for (name, reason), n in sorted(stats.dropped.items()):
        out.sample("maxage_writeback_dropped_total", n, labels(collection=name, reason=reason))
    out.family("maxage_writeback_pending", "gauge", "Acknowledged writes not yet flushed.")
    for name in names:
        out.sample("maxage_writeback_pending", writeback.pending(name), labels(collection=name))
    out.family(
        "maxage_writeback_flush_interval_seconds",
        "gauge",
        "The collection's flush_interval: the most a crash loses, per process.",
    )
    for spec in writeback.specs:
        out.sample(
            "maxage_writeback_flush_interval_seconds",
            spec.flush_interval,
            labels(collection=spec.name),
        )


def _consumers(lags: Sequence[Lag], out: Exposition) -> None:
    """Named consumers and webhook subscriptions (``consumer="_webhook.<name>"``), as of
    the last lag refresh (at most a second old)."""
    if not lags:
        return
    for family, kind, help_ in (
        ("maxage_consumer_behind_changes", "gauge",
         "Changes of the collection after the consumer's acknowledged position."),
        ("maxage_consumer_lag_seconds", "gauge",
         "Newest commit minus the first unacknowledged commit (0 when caught up)."),
        ("maxage_consumer_position", "gauge", "The consumer's acknowledged cursor."),
        ("maxage_consumer_over_limit", "gauge",
         "1 while the consumer is behind by more than its collection's consumer_lag_limit."),
    ):  # fmt: skip
        out.family(family, kind, help_)
        for lag in lags:
            value = {
                "maxage_consumer_behind_changes": lag.behind,
                "maxage_consumer_lag_seconds": round(lag.seconds, 6),
                "maxage_consumer_position": lag.position,
                "maxage_consumer_over_limit": int(lag.over_limit),
            }[family]
            out.sample(family, value, labels(collection=lag.collection, consumer=lag.name))
