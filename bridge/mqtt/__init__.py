"""MQTT: pure topic names (``topics``) and the paho session (``link``, the only paho importer)."""
