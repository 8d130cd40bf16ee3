"""The Python client against the real predict function served over HTTP: its answers become the client's errors."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from functions_framework import create_app
from werkzeug.serving import make_server

from deepskin.clients.client import Client
from deepskin.core.refused import DeepSkinError, Refused

PREDICT = Path(__file__).resolve().parents[2] / "functions" / "predict" / "main.py"


@pytest.fixture
def predict_url(emulators):
    server = make_server("127.0.0.1", 0, create_app("predict_http", str(PREDICT)),
                         threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_a_refusal_is_a_refused_and_a_deepskin_error(predict_url, tmp_path):
    """`except DeepSkinError` catches every error the client raises, refusals included."""
    note = tmp_path / "note.txt"
    note.write_text("not a photo", encoding="utf-8")
    with pytest.raises(DeepSkinError) as caught:
        Client(predict_url=predict_url).predict(note)
    assert isinstance(caught.value, Refused)
    assert caught.value.status == 415 and caught.value.code and caught.value.detail
