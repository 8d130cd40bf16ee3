"""Service adapters: storage, results, registry, feedback, jobs and HTTP around the core; may import deepskin.core
and the Google Cloud, Flask and functions-framework libraries, never deepskin.clients."""
