"""Prometheus metrics, on an injected registry.

The only importer of ``prometheus_client``. Other modules call intention-revealing methods
(``report_in()``, ``framing_error(reason)``) so they never learn metric names. Label sets are
bounded: reader labels are serials of attached readers, reasons come from closed enums.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

_NS = "magtek_bridge"
# Closed label sets, pre-created (bridge.mms DropReason values and parse_message reasons).
_FRAMING_REASONS = (
    "restarted", "orphan", "sequence_error", "cancelled", "length_mismatch", "too_large",
    "bad_length", "unknown_type", "short_report", "abandoned",
)
_DEVICE_MESSAGE_REASONS = (
    "no_start_byte", "bad_version", "bad_message_info", "unknown_type", "bad_status",
    "truncated", "bad_tlv", "empty",
)

# Command round trips are milliseconds on a healthy reader; a start-transaction response can
# take longer when the reader is busy, so the buckets run up to 10 s.
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


class Metrics:
    """Every collector the bridge exports, registered on one registry.

    Args:
        registry: where to register; tests pass a fresh ``CollectorRegistry``.
        process_metrics: also register the default process/platform/GC collectors.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, process_metrics: bool = True
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        if process_metrics:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        self.build_info = Info(f"{_NS}_build", "Bridge version and host id", registry=r)
        self.reader_connected = Gauge(
            f"{_NS}_reader_connected", "1 while the reader is open and identified",
            ["serial"], registry=r,
        )
        self.reader_info = Gauge(
            f"{_NS}_reader_info", "Reader identity (always 1)",
            ["serial", "model", "firmware"], registry=r,
        )
        self.readers_open = Gauge(f"{_NS}_readers_open", "Readers currently open", registry=r)
        self.reader_reconnects = Counter(
            f"{_NS}_reader_reconnects", "Reader (re)opens after the first", ["serial"], registry=r,
        )
        self.reader_open_failures = Counter(
            f"{_NS}_reader_open_failures", "Failed attempts to open or identify a reader",
            ["reason"], registry=r,
        )
        self.hid_reports = Counter(
            f"{_NS}_hid_reports", "HID reports moved", ["direction"], registry=r,
        )
        self.mms_messages = Counter(
            f"{_NS}_mms_messages", "Whole MMS messages moved", ["direction", "type"], registry=r,
        )
        self.framing_errors = Counter(
            f"{_NS}_framing_errors", "Reports or partial messages dropped while reassembling",
            ["reason"], registry=r,
        )
        self.device_protocol_errors = Counter(
            f"{_NS}_device_protocol_errors", "Whole messages from a reader that did not parse",
            ["reason"], registry=r,
        )
        self.commands = Counter(
            f"{_NS}_commands", "SendCommand payloads by outcome", ["outcome", "reason"], registry=r,
        )
        self.command_latency = Histogram(
            f"{_NS}_command_latency_seconds",
            "SendCommand received to matching response published",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.mqtt_connected = Gauge(
            f"{_NS}_mqtt_connected", "MQTT sessions currently connected", ["link"], registry=r,
        )
        self.mqtt_reconnects = Counter(
            f"{_NS}_mqtt_reconnects", "MQTT connections re-established after a loss", registry=r,
        )
        self.mqtt_publishes = Counter(
            f"{_NS}_mqtt_publishes", "MQTT publishes handed to the client", ["kind"], registry=r,
        )
        self.mqtt_publish_failures = Counter(
            f"{_NS}_mqtt_publish_failures", "MQTT publishes refused or failed (reason in the log)",
            registry=r,
        )

        self.outbox_messages = Gauge(
            f"{_NS}_outbox_messages",
            "Device messages held for the broker (waiting or unacknowledged)",
            ["serial"], registry=r,
        )
        self.outbox_bytes = Gauge(
            f"{_NS}_outbox_bytes", "Bytes held in all outboxes", registry=r,
        )
        self.outbox_dropped = Counter(
            f"{_NS}_outbox_dropped",
            "Device messages given up: full, expired, oversize, refused by the broker",
            ["reason"], registry=r,
        )
        self.outbox_replayed = Counter(
            f"{_NS}_outbox_replayed",
            "Device messages delivered late (replayed=true): outage, replug or restart",
            registry=r,
        )
        self.spool_failures = Counter(
            f"{_NS}_spool_failures",
            "Durable spool failures (it then stays off until restart)", ["operation"], registry=r,
        )
        self.spool_enabled = Gauge(
            f"{_NS}_spool_enabled", "1 while the durable spool is in use", registry=r,
        )

        self.websocket_clients = Gauge(
            f"{_NS}_websocket_clients", "WebSocket clients attached to a reader", registry=r,
        )
        self.websocket_frames = Counter(
            f"{_NS}_websocket_frames", "WebSocket frames to and from clients", ["direction"],
            registry=r,
        )
        self.websocket_rejected_frames = Counter(
            f"{_NS}_websocket_rejected_frames",
            "WebSocket command frames refused with an error frame", ["reason"], registry=r,
        )
        self.websocket_slow_disconnects = Counter(
            f"{_NS}_websocket_slow_client_disconnects",
            "WebSocket clients disconnected for falling behind their queue limit", registry=r,
        )
        self.websocket_refused = Counter(
            f"{_NS}_websocket_refused_connections",
            "WebSocket connections refused (auth, origin, unknown reader, too many)",
            ["reason"], registry=r,
        )
        self.ops_http_dropped = Counter(
            f"{_NS}_ops_http_dropped_connections",
            "Ops HTTP connections closed without a normal answer (timeout, evicted to make "
            "room, too_large, bad_request, client_closed)", ["reason"], registry=r,
        )

        # Series that dashboards graph exist from the start (at 0), not from the first error.
        for reason in _FRAMING_REASONS:
            self.framing_errors.labels(reason)
        for reason in _DEVICE_MESSAGE_REASONS:
            self.device_protocol_errors.labels(reason)
        for reason in ("full", "expired", "oversize", "refused"):
            self.outbox_dropped.labels(reason)
        for operation in ("open", "write", "delete", "read"):
            self.spool_failures.labels(operation)
        for direction in ("in", "out"):
            self.websocket_frames.labels(direction)

        # Label children used per report/message, looked up once (``labels()`` takes a lock).
        self._reports_in = self.hid_reports.labels("in")
        self._reports_out = self.hid_reports.labels("out")
        self._message_children: dict[tuple[str, str], Counter] = {}
        self._publish_children: dict[str, Counter] = {}

    # Intention-revealing helpers: the hot path calls these, never the collectors by name.
    def report_in(self, n: int = 1) -> None:
        self._reports_in.inc(n)

    def report_out(self, n: int = 1) -> None:
        self._reports_out.inc(n)

    def message(self, direction: str, message_type: str, count: int = 1) -> None:
        key = (direction, message_type)
        child = self._message_children.get(key)
        if child is None:
            child = self._message_children[key] = self.mms_messages.labels(*key)
        child.inc(count)

    def mqtt_publish(self, kind: str, count: int = 1) -> None:
        child = self._publish_children.get(kind)
        if child is None:
            child = self._publish_children[kind] = self.mqtt_publishes.labels(kind)
        child.inc(count)

    def framing_error(self, reason: str) -> None:
        self.framing_errors.labels(reason).inc()

    def command_accepted(self) -> None:
        self.commands.labels("accepted", "").inc()

    def command_rejected(self, reason: str) -> None:
        self.commands.labels("rejected", reason).inc()

    def websocket_frame(self, direction: str) -> None:
        self.websocket_frames.labels(direction).inc()

    def websocket_rejected(self, reason: str) -> None:
        self.websocket_rejected_frames.labels(reason).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type, for ``/metrics``."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


__all__ = ["CollectorRegistry", "Metrics"]
