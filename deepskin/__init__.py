"""DeepSkin core, shared by training, the functions and the clients.

The image and model modules (labels, preprocess, checks, model, pipeline) stay free of Google clients and
torch; `store` and `predict_service` wrap the Google Cloud clients for the functions.
"""
