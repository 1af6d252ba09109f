"""The local WebSocket endpoint: WebSocket MMS clients use a USB reader through the bridge.

``WebSocketEndpoint`` (the server thread), ``ClientHub`` (the ``ReaderObserver`` that fans
reader messages out to clients) and ``AccessPolicy`` (origin and credential checks).
"""

from bridge.websocket.access import AccessPolicy, Refusal
from bridge.websocket.hub import Client, ClientHub, error_frame, status_frame
from bridge.websocket.server import ReaderDirectory, WebSocketEndpoint

__all__ = [
    "AccessPolicy",
    "Client",
    "ClientHub",
    "ReaderDirectory",
    "Refusal",
    "WebSocketEndpoint",
    "error_frame",
    "status_frame",
]
