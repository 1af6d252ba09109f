"""MQTT: topic names (``topics``), the client codec (``packets``; its decoder in
``decoding``), one connection's socket (``wire``), a session (``link``) and the I/O loop that
drives them all (``loop``)."""
