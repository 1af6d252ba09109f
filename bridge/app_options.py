"""The options each part of the bridge takes, mapped from the validated ``Settings``: the
parts never see the configuration model itself.
"""

from __future__ import annotations

from bridge.config import Settings, plaintext_password
from bridge.courier import CourierOptions
from bridge.mqtt.link import LinkOptions, TlsOptions
from bridge.outbox import OutboxLimits
from bridge.session import SessionOptions
from bridge.transport import Backend, get_backend


def link_options(settings: Settings) -> LinkOptions:
    """Map the ``[mqtt]`` section onto the link's options (secrets already resolved)."""
    m = settings.mqtt
    tls = None
    if m.tls.enabled:
        tls = TlsOptions(
            ca_file=str(m.tls.ca_file) if m.tls.ca_file else None,
            cert_file=str(m.tls.cert_file) if m.tls.cert_file else None,
            key_file=str(m.tls.key_file) if m.tls.key_file else None,
            key_password=m.tls.key_password_value(),
            check_hostname=m.tls.check_hostname,
        )
    return LinkOptions(
        host=m.host,
        port=m.port,
        protocol=m.protocol,
        keepalive=m.keepalive,
        username=m.username,
        password=m.password_value(),
        tls=tls,
        reconnect_min_delay=m.reconnect_min_delay,
        reconnect_max_delay=m.reconnect_max_delay,
        max_inflight=settings.outbox.window + 8,
        password_in_clear=plaintext_password(m),
        # A command is the largest MMS message as hex; the payments requests are far smaller.
        max_incoming_packet=max(4 << 20, 2 * settings.readers.max_message_size + (64 << 10)),
    )


def session_options(settings: Settings) -> SessionOptions:
    r = settings.readers
    return SessionOptions(
        prefix=settings.topics.prefix,
        friendly_names=dict(settings.topics.friendly_names),
        client_id_prefix=settings.mqtt.client_id_prefix,
        host_id=settings.topics.host_id,
        qos_status=settings.mqtt.qos_status,
        read_timeout=r.read_timeout,
        max_message_size=r.max_message_size,
        command_timeout=r.command_timeout,
        identify_timeout=r.identify_timeout,
        command_rate=r.command_rate,
        command_burst=r.command_burst,
        error_interval=r.error_interval,
        log_messages=settings.logging.level.lower() == "debug",
    )


def courier_options(settings: Settings) -> CourierOptions:
    o = settings.outbox
    return CourierOptions(
        limits=OutboxLimits(max_messages=o.max_messages, max_bytes=o.max_bytes, ttl=o.ttl),
        window=o.window,
        qos=settings.mqtt.qos_messages,
        max_packet_size=o.max_packet_size,
    )


def make_backend(settings: Settings) -> Backend:
    r = settings.readers
    if r.simulate > 0 or r.backend == "simulated":
        card = None if r.simulate_card == "manual" else r.simulate_card
        return get_backend("simulated", count=max(1, r.simulate),
                           stream_rate=r.simulate_stream_rate, auto_present=card,
                           present_delay=r.simulate_present_delay)
    return get_backend("hid", api=r.hid_api)


__all__ = ["courier_options", "link_options", "make_backend", "session_options"]
