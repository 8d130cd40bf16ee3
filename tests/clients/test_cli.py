"""The `deepskin` command's error paths that need no service: with --json, each prints one JSON object on stdout
and exits with the code the module's docstring documents. (The commands against a running stack:
tests/e2e/test_stack.py.)"""

from __future__ import annotations

import base64
import json

import pytest

from deepskin.clients import cli
from deepskin.clients.client import LOCAL_EMULATORS, Client
from deepskin.core.patient import QUESTIONS, PatientInfo


@pytest.fixture
def deepskin(tmp_path, monkeypatch, capsys):
    """Run the command in this process, with a private HOME (its tokens file); (exit code, stdout, stderr)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in LOCAL_EMULATORS:  # main points the Google clients at the local emulators: undone after the test
        monkeypatch.setenv(name, "")  # recorded even when unset, so teardown removes what main sets
        monkeypatch.delenv(name)

    def run(*args: str) -> tuple[int, str, str]:
        code = cli.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def one_json_object(out: str) -> dict:
    assert out.count("\n") == 1, out
    answer = json.loads(out)
    assert set(answer) == {"error", "message"} and answer["message"], answer
    return answer


@pytest.mark.parametrize("args", [
    ["--json"],  # no command
    ["predict", "--json"],  # no image
    ["--json", "status"],  # --json before the command, where only a command may stand
    ["feedback", "0" * 32, "--label", "not-a-label", "--json"],
    ["status", "--json", "--no-such-option"],
    ["result", "--jso"],  # argparse takes an abbreviation of --json
])
def test_a_command_line_that_does_not_parse_is_one_json_object_with_json(deepskin, args):
    code, out, err = deepskin(*args)
    assert (code, one_json_object(out)["error"], err) == (cli.USAGE, "usage", "")


def test_without_json_a_usage_error_is_argparse_usage_on_stderr(deepskin):
    code, out, err = deepskin("predict")
    assert (code, out) == (cli.USAGE, "")
    assert err.startswith("usage: deepskin predict") and "required: image" in err


@pytest.mark.parametrize("content", ["{not json", "[]", "\xff"])
@pytest.mark.parametrize("args", [["result", "0" * 32], ["delete", "0" * 32], ["predict", "IMAGE"]])
def test_a_corrupt_tokens_file_is_one_json_object_with_json(deepskin, tmp_path, content, args):
    tokens = tmp_path / ".deepskin" / "tokens.json"
    tokens.parent.mkdir()
    tokens.write_bytes(content.encode("latin-1"))
    image = tmp_path / "lesion.jpg"
    image.write_bytes(b"\xff\xd8\xff")
    code, out, err = deepskin(*[str(image) if arg == "IMAGE" else arg for arg in args], "--json")
    answer = one_json_object(out)
    # Predict reads the file before sending anything (OTHER, not UNAVAILABLE: nothing listens), so that the new
    # result's token is never lost.
    assert (code, answer["error"], err) == (cli.OTHER, "tokens_file", "")
    assert str(tokens) in answer["message"]
    code, out, err = deepskin(*[str(image) if arg == "IMAGE" else arg for arg in args])
    assert (code, out) == (cli.OTHER, "") and str(tokens) in err and "Traceback" not in err


def test_any_other_failure_is_one_json_object_with_json(deepskin, tmp_path, monkeypatch):
    image = tmp_path / "lesion.jpg"
    image.write_bytes(b"\xff\xd8\xff")
    answer = {"id": "0" * 32, "token": "t", "status": "done", "heatmap_png_base64": base64.b64encode(b"png").decode()}
    monkeypatch.setattr(Client, "predict", lambda *_: dict(answer))
    code, out, _ = deepskin("predict", str(image), "--heatmap", str(tmp_path / "no-such-folder" / "h.png"), "--json")
    assert (code, one_json_object(out)["error"]) == (cli.OTHER, "unexpected")
    assert json.loads((tmp_path / ".deepskin" / "tokens.json").read_text()) == {answer["id"]: "t"}  # kept first
    with pytest.raises(FileNotFoundError):  # a person gets the traceback
        deepskin("predict", str(image), "--heatmap", str(tmp_path / "no-such-folder" / "h.png"))


@pytest.mark.parametrize("command", ["predict", "upload"])
@pytest.mark.parametrize("question", QUESTIONS)
def test_a_bad_answer_is_a_usage_error_naming_its_question(deepskin, tmp_path, command, question):
    """Refused on the device before anything is sent (no service runs here: a request would exit 5)."""
    image = tmp_path / "lesion.jpg"
    image.write_bytes(b"\xff\xd8\xff")
    code, out, _ = deepskin(command, str(image), f"--{question}", "perhaps", "--json")
    answer = one_json_object(out)
    assert (code, answer["error"]) == (cli.USAGE, "usage")
    assert answer["message"].startswith(f"{question} must be yes, no or not sure")


def test_answers_on_the_command_line_are_the_cores_vocabulary():
    args = cli.parser().parse_args(["predict", "p.jpg", "--age", "61", "--bled", "yes", "--itches", "no",
                                    "--raised", "not sure"])
    assert cli.patient_info(args) == PatientInfo.parse(age=61, bled="yes", itches="no")
