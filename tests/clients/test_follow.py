"""Following a spot from the Python client and the `deepskin` command, against the predict function served over
HTTP on the real emulators: consent, the history, the reminder file, the one-action delete."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from functions_framework import create_app
from werkzeug.serving import make_server

from deepskin.clients import cli
from deepskin.clients.client import LOCAL_EMULATORS, Client, NotFound
from deepskin.core.refused import Refused
from deepskin.services import store

REPO = Path(__file__).resolve().parents[2]
PREDICT = REPO / "functions" / "predict" / "main.py"
LESIONS = sorted((REPO / "tests" / "fixtures" / "lesions").glob("*.jpg"))

pytestmark = pytest.mark.usefixtures("clean_firestore")


@pytest.fixture
def predict_url(emulators):
    server = make_server("127.0.0.1", 0, create_app("predict_http", str(PREDICT)), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def deepskin(predict_url, tmp_path, monkeypatch, capsys):
    """The command in this process, with a private HOME and the served function; (exit code, stdout)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("DEEPSKIN_PREDICT_URL", predict_url)
    for name in LOCAL_EMULATORS:  # main sets those the session left unset: recorded, so teardown removes them
        if name not in os.environ:
            monkeypatch.setenv(name, "")
            monkeypatch.delenv(name)

    def run(*args: str) -> tuple[int, str]:
        code = cli.main(list(args))
        return code, capsys.readouterr().out

    return run


def test_the_client_follows_a_spot_only_with_consent(predict_url):
    client = Client(predict_url=predict_url)
    first = client.predict(LESIONS[0])
    with pytest.raises(Refused) as refused:
        client.follow(first["id"], first["token"], months=3)
    assert refused.value.code == "consent_required"
    lesion = client.follow(first["id"], first["token"], months=3, consent=True)
    later = client.predict(LESIONS[1])
    client.add_to_lesion(lesion["id"], lesion["token"], later["id"], later["token"])
    history = client.add_to_lesion(lesion["id"], lesion["token"], later["id"], later["token"])  # a retry
    assert [e["result_id"] for e in history["entries"]] == [first["id"], later["id"]]
    assert client.lesion(lesion["id"], lesion["token"]) == history
    assert client.lesion_photo(lesion["id"], lesion["token"], later["id"])[:2] == b"\xff\xd8"
    assert client.lesion_reminder(lesion["id"], lesion["token"]).startswith("BEGIN:VCALENDAR\r\n")
    deleted = client.delete_lesion(lesion["id"], lesion["token"])["deleted"]
    assert f"lesions/{lesion['id']}" in deleted["documents"]
    with pytest.raises(NotFound):
        client.lesion(lesion["id"], lesion["token"])
    assert store.get_result(first["id"]) is None and store.get_result(later["id"]) is None


def test_the_command_follows_adds_reminds_and_deletes(deepskin, tmp_path):
    code, out = deepskin("predict", str(LESIONS[0]), "--json")
    first = json.loads(out)["id"]
    code, out = deepskin("follow", first, "--months", "3", "--json")  # no --consent: the service refuses
    assert (code, json.loads(out)["error"]) == (cli.USAGE, "consent_required")

    code, out = deepskin("follow", first, "--months", "3", "--consent")
    assert code == cli.OK and "followed for 3 months" in out
    tokens = json.loads((tmp_path / ".deepskin" / "tokens.json").read_text())
    [lesion] = [key.removeprefix("lesion:") for key in tokens if key.startswith("lesion:")]

    code, out = deepskin("predict", str(LESIONS[1]), "--json")
    later = json.loads(out)["id"]
    code, out = deepskin("follow", later, "--lesion", lesion, "--json")
    assert code == cli.OK and [e["result_id"] for e in json.loads(out)["entries"]] == [first, later]

    reminder = tmp_path / "reminder.ics"
    code, out = deepskin("lesion", lesion, "--reminder", str(reminder))
    assert code == cli.OK and first in out and later in out and "nothing is sent by e-mail" in out
    assert reminder.read_bytes().startswith(b"BEGIN:VCALENDAR\r\n")

    code, out = deepskin("lesion", lesion, "--delete")
    assert code == cli.OK and "every photo, result and report" in out
    assert f"lesion:{lesion}" not in json.loads((tmp_path / ".deepskin" / "tokens.json").read_text())
    assert deepskin("lesion", lesion, "--token", tokens[f"lesion:{lesion}"])[0] == cli.NOT_FOUND
