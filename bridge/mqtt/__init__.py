"""MQTT: topic names (``topics``), the client codec (``packets``), one connection's socket
(``wire``), a session (``link``) and the I/O loop that drives them all (``loop``)."""
