"""MPPG Payment Request API: models, an HTTP client, and its bridge to MQTT.

Modules: ``errors`` (codes -> exceptions), ``models`` (what MPPG returns), ``definition``
(what we send, checked), ``client`` (the four endpoints over httpx), ``relay`` (one
request's WebSocket status relay), ``relays`` (their bound), ``topics``, ``metrics``,
``service`` (MQTT request/response), ``cli`` (``magtek-bridge payreq``).
Importing the package is light: httpx and websockets load only with ``client``/``relay``.
"""
