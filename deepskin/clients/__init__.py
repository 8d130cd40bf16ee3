"""Clients: the Python client and the `deepskin` CLI; may import deepskin.core, deepskin.services and deepskin.loop."""
