"""DeepSkin, in three layers; each imports only the layers below it (pyproject's import-linter contracts):

- deepskin.clients: what people and scripts run (the Python client, the `deepskin` CLI);
- deepskin.services: the adapters around Google Cloud clients and HTTP that the functions are made of;
- deepskin.core: bytes in, assessment out; numpy, Pillow and onnxruntime only.
"""
