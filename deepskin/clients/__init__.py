"""Clients: the Python client and the `deepskin` CLI; may import deepskin.core and deepskin.services."""
