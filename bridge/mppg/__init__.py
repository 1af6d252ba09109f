"""MPPG Payment Request API: models, an HTTP client, and its bridge to MQTT.

Modules: ``errors`` (codes -> exceptions), ``models`` (what MPPG returns), ``definition``
(what we send, checked), ``client`` (the four endpoints over httpx), ``operations`` (what the
MQTT service adds to them), ``replies`` (the reply cache and request limits), ``relay`` (one
request's WebSocket status relay) and ``relay_wire`` (its messages), ``relays`` (their
bound and resumption), ``journal`` (relays on disk), ``topics``, ``metrics``, ``service``
(MQTT request/response), ``cli`` (``magtek-bridge payreq``).
Importing the package is light: httpx and websockets load only with ``client``/``relay``.
"""
