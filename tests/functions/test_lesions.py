"""Following a spot through predict_http against the real emulators: consent, retention, the history, the
reminder, and the one-action delete."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.cloud import firestore

from deepskin.services import store
from deepskin.services.config import settings

REPO = Path(__file__).resolve().parents[2]
LESIONS = sorted((REPO / "tests" / "fixtures" / "lesions").glob("*.jpg"))
LESION_TOKEN = "X-DeepSkin-Lesion-Token"

pytestmark = pytest.mark.usefixtures("clean_firestore")


def predicted(http_client, path: Path = LESIONS[0]) -> dict:
    answer = http_client.post("/predict", data=path.read_bytes(), content_type="image/jpeg").get_json()
    assert answer["status"] == "done"
    return answer


def follow(http_client, result: dict, **body) -> tuple[int, dict]:
    response = http_client.post("/lesions", json={"result_id": result["id"], **body},
                                headers={"X-DeepSkin-Token": result["token"]})
    return response.status_code, response.get_json()


def followed(http_client, months: int = 3) -> tuple[dict, dict]:
    result = predicted(http_client)
    status, lesion = follow(http_client, result, consent=True, months=months)
    assert status == 201, lesion
    return result, lesion


def add(http_client, lesion: dict, result: dict):
    return http_client.post(f"/lesions/{lesion['id']}/results", json={"result_id": result["id"]},
                            headers={LESION_TOKEN: lesion["token"], "X-DeepSkin-Token": result["token"]})


def blob_exists(upload: dict) -> bool:
    return store.storage_client().bucket(upload["bucket"]).get_blob(upload["name"]) is not None


@pytest.mark.parametrize(("body", "code"), [({}, "consent_required"), ({"consent": False, "months": 3}, "consent_required"),
                                            ({"consent": "yes", "months": 3}, "consent_required"),
                                            ({"consent": True}, "invalid_duration"),
                                            ({"consent": True, "months": 24}, "invalid_duration")])
def test_following_needs_explicit_consent_and_a_duration(http_client, body, code):
    result = predicted(http_client)
    status, answer = follow(http_client, result, **body)
    assert (status, answer["error"]) == (400, code)
    assert list(store.firestore_client().collection(store.LESIONS).stream()) == []
    assert "lesion_id" not in store.get_result(result["id"])  # the result keeps its 30 days


def test_only_the_owner_can_follow_an_assessed_result(http_client):
    result = predicted(http_client)
    status, answer = follow(http_client, {**result, "token": "someone else"}, consent=True, months=3)
    assert (status, answer["error"]) == (404, "unknown_result")
    rejected = http_client.post("/predict", data=b"not a photo" * 10, content_type="image/jpeg").get_json()
    status, answer = follow(http_client, rejected, consent=True, months=3)
    assert (status, answer["error"]) == (409, "not_assessed")


def test_following_keeps_photo_result_and_reports_for_the_chosen_time(http_client, feedback_client):
    result = predicted(http_client)
    report = {"prediction_id": result["id"], "label": "nv", "role": "user", "idempotency_key": "before"}
    assert feedback_client.post("/feedback", json=report, headers={"X-DeepSkin-Token": result["token"]}
                                ).status_code == 202
    upload = store.get_result(result["id"])["upload"]
    status, lesion = follow(http_client, result, consent=True, months=6)
    assert status == 201
    doc = store.firestore_client().collection(store.LESIONS).document(lesion["id"]).get().to_dict()
    expected = datetime.now(UTC) + timedelta(days=183)
    assert abs(doc["expire_at"] - expected) < timedelta(minutes=1)
    assert doc["owner_token_sha256"] != lesion["token"] and lesion["token"] not in str(doc)  # hashed at rest
    kept = store.get_result(result["id"])
    assert kept["expire_at"] == doc["expire_at"] and kept["lesion_id"] == lesion["id"]
    # The photo left the uploads bucket (30 days) for the followed copy, deleted by custom_time (infra/storage.tf).
    assert not blob_exists(upload)
    copy = store.storage_client().bucket(settings().results_bucket).get_blob(kept["upload"]["name"])
    assert copy.name == f"lesions/183d/{lesion['id']}/{result['id']}"
    assert copy.custom_time == doc["started_at"]
    # The report made before, and one made after following, live as long as the spot.
    report["idempotency_key"] = "after"
    assert feedback_client.post("/feedback", json=report, headers={"X-DeepSkin-Token": result["token"]}
                                ).status_code == 202
    reports = [s.to_dict() for s in store.firestore_client().collection(store.FEEDBACK).stream()]
    assert len(reports) == 2 and all(r["expire_at"] >= doc["expire_at"] for r in reports)


def test_a_result_that_is_not_followed_keeps_its_30_days(http_client):
    result = predicted(http_client)
    doc = store.get_result(result["id"])
    assert doc["expire_at"] - datetime.now(UTC) < timedelta(days=settings().retention_days, minutes=1)
    assert doc["upload"]["bucket"] == settings().uploads_bucket


def test_the_history_shows_photos_bands_changes_and_reports(http_client, feedback_client):
    first, lesion = followed(http_client)
    report = {"prediction_id": first["id"], "label": "nv", "role": "user", "comment": "it itches",
              "idempotency_key": "k"}
    feedback_client.post("/feedback", json=report, headers={"X-DeepSkin-Token": first["token"]})
    later = http_client.post("/predict?grew=yes&bled=no", data=LESIONS[1].read_bytes(),
                             content_type="image/jpeg").get_json()
    response = add(http_client, lesion, later)
    assert response.status_code == 200
    history = http_client.get(f"/lesions/{lesion['id']}", headers={LESION_TOKEN: lesion["token"]}).get_json()
    assert [e["answers"] for e in history["entries"]] == [{}, {"grew": "yes", "bled": "no"}]  # what was said
    assert [e["result_id"] for e in history["entries"]] == [first["id"], later["id"]]
    assert [e["risk"] for e in history["entries"]] == [first["risk"], later["risk"]]
    assert all(e["created_at"] and e["has_photo"] for e in history["entries"])
    assert history["entries"][0]["reported"][0]["comment"] == "it itches"
    [change] = history["changes"]
    order = {"low": 0, "medium": 1, "high": 2}
    assert change["moved_up"] is (order[later["risk"]] > order[first["risk"]]) is history["moved_up"]
    assert isinstance(change["looks_alike"], bool) and history["same_spot_note"]
    for entry, path in zip(history["entries"], LESIONS[:2], strict=True):
        photo = http_client.get(f"/lesions/{lesion['id']}/photos/{entry['result_id']}",
                                headers={LESION_TOKEN: lesion["token"]})
        assert photo.status_code == 200 and photo.data[:2] == b"\xff\xd8"
        assert len(photo.data) < len(path.read_bytes()) + 1024  # the stored copy, metadata stripped
    other = predicted(http_client)
    assert http_client.get(f"/lesions/{lesion['id']}/photos/{other['id']}",
                           headers={LESION_TOKEN: lesion["token"]}).status_code == 404


def test_the_lesion_token_travels_in_a_header_only_and_is_checked(http_client):
    _, lesion = followed(http_client)
    assert http_client.get(f"/lesions/{lesion['id']}").status_code == 404
    assert http_client.get(f"/lesions/{lesion['id']}?token={lesion['token']}").status_code == 404
    assert http_client.get(f"/lesions/{lesion['id']}", headers={LESION_TOKEN: "wrong"}).status_code == 404
    assert http_client.delete(f"/lesions/{lesion['id']}", headers={LESION_TOKEN: "wrong"}).status_code == 404
    preflight = http_client.options("/lesions", headers={"Origin": "http://localhost:8080",
                                                         "Access-Control-Request-Method": "POST"})
    assert LESION_TOKEN in preflight.headers["Access-Control-Allow-Headers"]


def test_a_result_belongs_to_one_history(http_client):
    result, lesion = followed(http_client)
    status, answer = follow(http_client, result, consent=True, months=1)
    assert (status, answer["error"]) == (409, "already_followed")
    _, other = followed(http_client)
    assert add(http_client, other, result).get_json()["error"] == "in_another_history"
    assert add(http_client, lesion, result).status_code == 200  # its own: harmless, listed once
    history = http_client.get(f"/lesions/{lesion['id']}", headers={LESION_TOKEN: lesion["token"]}).get_json()
    assert [e["result_id"] for e in history["entries"]] == [result["id"]]


def test_the_reminder_is_a_calendar_file_for_a_day_while_the_history_is_kept(http_client):
    _, lesion = followed(http_client, months=1)
    headers = {LESION_TOKEN: lesion["token"]}
    suggested = http_client.get(f"/lesions/{lesion['id']}/reminder.ics", headers=headers)
    assert suggested.status_code == 200 and suggested.mimetype == "text/calendar"
    day = lesion["suggested_reminder"].replace("-", "")
    assert f"DTSTART;VALUE=DATE:{day}" in suggested.text and suggested.text.startswith("BEGIN:VCALENDAR\r\n")
    chosen = (datetime.now(UTC) + timedelta(days=10)).date()
    assert f"{chosen:%Y%m%d}" in http_client.get(f"/lesions/{lesion['id']}/reminder.ics?date={chosen}",
                                                 headers=headers).text
    for bad in ("2020-01-01", (datetime.now(UTC) + timedelta(days=40)).date().isoformat(), "soon"):
        answer = http_client.get(f"/lesions/{lesion['id']}/reminder.ics?date={bad}", headers=headers)
        assert (answer.status_code, answer.get_json()["error"]) == (400, "invalid_date")


def test_deleting_the_lesion_deletes_every_photo_result_and_report_in_one_action(http_client, feedback_client,
                                                                                 clinician):
    first, lesion = followed(http_client)
    later = predicted(http_client, LESIONS[1])
    add(http_client, lesion, later)
    for result in (first, later):
        report = {"prediction_id": result["id"], "label": "mel", "role": "clinician", "idempotency_key": "c"}
        assert feedback_client.post("/feedback", json=report, headers=clinician).status_code == 202
    docs = [store.get_result(r["id"]) for r in (first, later)]
    training = [s.to_dict()["training_image"] for s in store.firestore_client().collection(store.FEEDBACK).stream()]
    answer = http_client.delete(f"/lesions/{lesion['id']}", headers={LESION_TOKEN: lesion["token"]}).get_json()
    deleted = answer["deleted"]
    assert f"lesions/{lesion['id']}" in deleted["documents"]
    assert {f"predictions/{r['id']}" for r in (first, later)} <= set(deleted["documents"])
    assert set(training) <= set(deleted["objects"])
    for doc in docs:
        assert store.get_result(doc["upload"]["name"].rsplit("/", 1)[-1]) is None
        assert not blob_exists(doc["upload"]) and store.read_heatmap(doc["upload"]["name"].rsplit("/", 1)[-1]) is None
    assert list(store.firestore_client().collection(store.FEEDBACK).stream()) == []
    assert list(store.firestore_client().collection(store.LESIONS).stream()) == []
    assert http_client.get(f"/lesions/{lesion['id']}", headers={LESION_TOKEN: lesion["token"]}).status_code == 404


def test_deleting_one_result_takes_it_out_of_the_history(http_client):
    first, lesion = followed(http_client)
    later = predicted(http_client, LESIONS[1])
    add(http_client, lesion, later)
    assert http_client.delete(f"/results/{first['id']}", headers={"X-DeepSkin-Token": first["token"]}).status_code == 200
    history = http_client.get(f"/lesions/{lesion['id']}", headers={LESION_TOKEN: lesion["token"]}).get_json()
    assert [e["result_id"] for e in history["entries"]] == [later["id"]]


def test_deleting_a_lesion_spares_another_spots_result_and_ends(http_client):
    result, lesion = followed(http_client)
    _, other = followed(http_client)
    # The moment inside a refused add: listed in the other spot, still tied to its own (lesions.add).
    # And a result deleted on its own meanwhile, which only the spot it named unlisted.
    store.firestore_client().collection(store.LESIONS).document(other["id"]).update(
        {"result_ids": firestore.ArrayUnion([result["id"], "f" * 32])})
    assert http_client.delete(f"/lesions/{other['id']}", headers={LESION_TOKEN: other["token"]}).status_code == 200
    assert store.get_result(result["id"])["lesion_id"] == lesion["id"]
    history = http_client.get(f"/lesions/{lesion['id']}", headers={LESION_TOKEN: lesion["token"]}).get_json()
    assert [e["has_photo"] for e in history["entries"]] == [True]
