"""Service adapters: storage, results, the registry, identity, settings and HTTP around the core; may import
deepskin.core and the Google Cloud, Flask and functions-framework libraries, never deepskin.loop or
deepskin.clients."""
