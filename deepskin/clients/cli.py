"""`deepskin`: assess a skin-lesion photo from the command line (a triage aid, never a diagnosis).

    deepskin upload lesion.jpg --wait     # through the uploads bucket, the event path
    deepskin predict lesion.jpg           # through the HTTP API
    deepskin result ID | feedback ID --label mel | delete ID | status
    deepskin follow ID --months 3 --consent   # follow this spot: keep it to compare with later photos
    deepskin follow ID --lesion LESION        # add a later photo's result to the spot's history
    deepskin lesion LESION [--reminder FILE.ics] [--delete]
    deepskin models [--rollback]          # operators: the served model, the gate's decisions, the ledger

Exit codes scripts can trust: 0 done (or accepted), 2 usage error, 3 image rejected or unusable, 4 not found,
5 service unavailable, 1 anything else. `--json` prints one JSON object on stdout: the result's fields,
or for any error (a command line that does not parse and an unreadable tokens file included)
{"error": code, "message": text}.
Capability tokens received here are kept in ~/.deepskin/tokens.json (mode 0600), so `result`, `feedback`,
`delete`, `follow` and `lesion` work without --token (a followed spot's token under "lesion:ID").
"""

from __future__ import annotations

import argparse
import base64
import getpass
import itertools
import json
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from deepskin.clients.client import Client, NotFound, Unavailable, use_local_emulators
from deepskin.core.labels import CLASS_NAMES, CLASSES, COARSE_LABELS, NOT_A_DIAGNOSIS
from deepskin.core.patient import ASKED, QUESTIONS, SEXES, SITES, InvalidPatientInfo, PatientInfo
from deepskin.core.refused import Refused

OK, OTHER, USAGE, REFUSED_IMAGE, NOT_FOUND, UNAVAILABLE = 0, 1, 2, 3, 4, 5
STATUS_EXIT = {"done": OK, "pending": OK, "rejected": REFUSED_IMAGE, "unusable": REFUSED_IMAGE, "failed": OTHER}


class UsageError(Exception):
    def __init__(self, message: str, usage: str = ""):
        super().__init__(message)
        self.usage = usage  # argparse's usage line, for a person


class TokensFileError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    """argparse, except that a usage error is raised for `main` to report like any other error (with --json, as
    the one JSON object) instead of being printed here before exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.format_usage())


# --- capability tokens ------------------------------------------------------------------------------------

def tokens_path() -> Path:
    return Path.home() / ".deepskin" / "tokens.json"


def load_tokens() -> dict[str, str]:
    try:
        tokens = json.loads(tokens_path().read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
        raise TokensFileError(f"{tokens_path()} cannot be read ({type(exc).__name__}): fix or remove it, or pass "
                              "--token") from None
    if not isinstance(tokens, dict):
        raise TokensFileError(f"{tokens_path()} is not a JSON object of result ids and tokens: fix or remove it, "
                              "or pass --token")
    return tokens


def save_tokens(tokens: dict[str, str]) -> None:
    """Written to a 0600 file created as such: a token is the only key to someone's photo and result."""
    path = tokens_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(tokens, out, indent=1)
    os.replace(partial, path)


def token_for(id_: str, given: str | None) -> str:
    token = given or load_tokens().get(id_)
    if not token:
        raise UsageError(f"no token for {id_} in {tokens_path()}: pass --token")
    return token


# --- output -----------------------------------------------------------------------------------------------

@contextmanager
def spinner(text: str) -> Iterator[None]:
    """A spinner on stderr while waiting, only for a person at a terminal (never in pipes or logs)."""
    if not sys.stderr.isatty():
        yield
        return
    done = threading.Event()

    def spin() -> None:
        for frame in itertools.cycle("|/-\\"):
            sys.stderr.write(f"\r{frame} {text}")
            sys.stderr.flush()
            if done.wait(0.1):
                break
        sys.stderr.write("\r" + " " * (len(text) + 2) + "\r")

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def describe(result: dict) -> str:
    """The result in plain words: what to do, the class probabilities, and the standing disclaimer."""
    lines = [f"Result {result['id']}: {result['status']}"]
    if result.get("risk"):
        lines.append(f"Risk: {result['risk'].upper()} (malignant probability "
                     f"{result['malignant_probability']:.0%})")
    elif result.get("message"):
        lines.append(result["message"])
    if result.get("caveat_text"):
        lines.append(f"Caution: {result['caveat_text']}")
    if result.get("advice"):
        lines.append(result["advice"].removesuffix(NOT_A_DIAGNOSIS).strip())
    if result.get("top_class"):
        lines.append(f"Type that stands out most for its usual frequency: {CLASS_NAMES[result['top_class']]} "
                     "(not a diagnosis; chances below)")
    probabilities = result.get("probabilities") or {}
    for name, p in sorted(probabilities.items(), key=lambda item: -item[1]):
        marker = "*" if name == result.get("top_class") else " "
        lines.append(f" {marker}{p:6.1%}  {name:<5} {CLASS_NAMES.get(name, '')}")
    lines.append(NOT_A_DIAGNOSIS)
    return "\n".join(lines)


def report_error(as_json: bool, code: str, message: str) -> None:
    """With --json, the one JSON object a script parses (errors too); otherwise a line on stderr."""
    if as_json:
        print(json.dumps({"error": code, "message": message}))
    else:
        print(f"deepskin: {message}", file=sys.stderr)


def show(result: dict, as_json: bool) -> int:
    print(json.dumps(result, indent=2, sort_keys=True) if as_json else describe(result))
    return STATUS_EXIT.get(result.get("status", ""), OK)


# --- commands ---------------------------------------------------------------------------------------------

def image_path(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise UsageError(f"{value}: no such file")
    return path


def patient_info(args: argparse.Namespace) -> PatientInfo:
    try:
        return PatientInfo.parse(args.age, args.sex, args.site, **{q: getattr(args, q) for q in QUESTIONS})
    except InvalidPatientInfo as exc:
        raise UsageError(str(exc)) from None


def cmd_upload(client: Client, args: argparse.Namespace) -> int:
    path = image_path(args.image)
    patient = patient_info(args)
    tokens = load_tokens()  # before anything is sent: a tokens file that cannot take the new token fails here
    with spinner("waiting for the result"):
        result = client.upload(path, wait=args.wait, timeout=args.timeout, patient=patient)
    save_tokens({**tokens, result["id"]: result["token"]})
    if not args.wait and not args.json:
        print(f"Uploaded as {result['id']}; `deepskin result {result['id']}` once it is assessed.")
        return OK
    return show(result, args.json)


def cmd_predict(client: Client, args: argparse.Namespace) -> int:
    path = image_path(args.image)
    patient = patient_info(args)
    tokens = load_tokens()  # (as for upload)
    with spinner("assessing"):
        try:
            result = client.predict(path, patient)
        except Refused as refused:
            # The service refuses an empty, oversize or non-image body before assessing it.
            report_error(args.json, refused.code, f"the image was refused: {refused}")
            return REFUSED_IMAGE
    save_tokens({**tokens, result["id"]: result["token"]})
    heatmap = result.pop("heatmap_png_base64", None)
    if args.heatmap and heatmap:
        Path(args.heatmap).write_bytes(base64.b64decode(heatmap))
    return show(result, args.json)


def cmd_result(client: Client, args: argparse.Namespace) -> int:
    return show(client.result(args.id, token_for(args.id, args.token)), args.json)


def cmd_feedback(client: Client, args: argparse.Namespace) -> int:
    token = args.token or load_tokens().get(args.id)  # a clinician may report on a result without its token
    answer = client.feedback(args.id, args.label, token, role=args.role, histopathology=args.histopathology,
                             comment=args.comment, idempotency_key=args.idempotency_key)
    print(json.dumps(answer, indent=2) if args.json else f"Thank you: report {answer.get('report_id')} "
          f"recorded ({answer.get('counts_as')}).")
    return OK


def cmd_delete(client: Client, args: argparse.Namespace) -> int:
    answer = client.delete(args.id, token_for(args.id, args.token))
    tokens = load_tokens()
    if tokens.pop(args.id, None):
        save_tokens(tokens)
    deleted = answer.get("deleted", {})
    print(json.dumps(answer, indent=2) if args.json else
          f"Deleted {args.id}: {len(deleted.get('documents', []))} documents, {len(deleted.get('objects', []))} "
          "objects (the photo, its heatmap, the result and its reports).")
    return OK


def lesion_key(lesion_id: str) -> str:
    """A followed spot's entry in the tokens file (beside the results' own ids)."""
    return f"lesion:{lesion_id}"


def cmd_follow(client: Client, args: argparse.Namespace) -> int:
    token = token_for(args.id, args.token)
    tokens = load_tokens()  # (as for upload: before the new lesion's token exists)
    if args.lesion:
        lesion_token = token_for(lesion_key(args.lesion), args.lesion_token)
        history = client.add_to_lesion(args.lesion, lesion_token, args.id, token)
    else:
        history = client.follow(args.id, token, args.months, consent=args.consent)
        save_tokens({**tokens, lesion_key(history["id"]): history["token"]})
    print(json.dumps(history, indent=2, sort_keys=True) if args.json else describe_lesion(history))
    return OK


def cmd_lesion(client: Client, args: argparse.Namespace) -> int:
    key = lesion_key(args.lesion)
    token = token_for(key, args.token)
    if args.delete:
        answer = client.delete_lesion(args.lesion, token)
        tokens = load_tokens()
        if tokens.pop(key, None):
            save_tokens(tokens)
        deleted = answer.get("deleted", {})
        print(json.dumps(answer, indent=2) if args.json else
              f"Deleted the spot {args.lesion}: {len(deleted.get('documents', []))} documents, "
              f"{len(deleted.get('objects', []))} objects (every photo, result and report in its history).")
        return OK
    if args.reminder:
        ics = client.lesion_reminder(args.lesion, token, args.date)
        Path(args.reminder).write_text(ics, encoding="utf-8", newline="")  # its CRLF line ends as they are
    history = client.lesion(args.lesion, token)
    print(json.dumps(history, indent=2, sort_keys=True) if args.json else describe_lesion(history))
    if args.reminder and not args.json:
        print(f"Reminder saved to {args.reminder}: open it to add it to your calendar (nothing is sent by e-mail).")
    return OK


def describe_lesion(history: dict) -> str:
    """A followed spot in plain lines: its photos over time, whether the band moved up, the same-spot hint."""
    lines = [(f"Spot {history['id']}: followed for {history['months']} months; everything in it is deleted "
             f"automatically on {history['expire_at'][:10]}.")]
    for entry in history["entries"]:
        reported = "; ".join(f"you reported {r['label']}" + (f" ({r['comment']})" if r.get("comment") else "")
                             for r in entry["reported"])
        lines.append(f"  {(entry['created_at'] or '')[:10]}  {(entry['risk'] or entry['status']).upper():<7} "
                     f"result {entry['result_id']}" + (f"  [{reported}]" if reported else ""))
    for change in history["changes"]:
        if change["moved_up"]:
            lines.append(f"The assessment MOVED UP from {change['from_band']} to {change['to_band']} (result "
                         f"{change['to']}): have the spot checked by a doctor.")
        if change["looks_alike"] is False:
            lines.append(f"Same spot? DeepSkin cannot confirm that result {change['to']} shows the same spot as the "
                         "photo before it: check that it does.")
    if history["changes"]:
        lines.append(f"(The same-spot check is a hint: {history['same_spot_note']})")
    if history.get("suggested_reminder"):
        lines.append(f"Next photo suggested on {history['suggested_reminder']} "
                     f"(`deepskin lesion {history['id']} --reminder reminder.ics` writes a calendar file).")
    lines.append(NOT_A_DIAGNOSIS)
    return "\n".join(lines)


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    components = client.status()
    all_up = all(c.up for c in components)
    if args.json:
        print(json.dumps({"all_up": all_up, "components": [vars(c) for c in components]}, indent=2))
    else:
        for c in components:
            print(f"{c.name:<10} {'up  ' if c.up else 'DOWN'}  {c.url}  ({c.detail})")
    return OK if all_up else UNAVAILABLE


# --- operators --------------------------------------------------------------------------------------------

def cmd_models(_client: Client, args: argparse.Namespace) -> int:
    """Straight from Firestore and the models bucket, so only with an operator's Google Cloud rights (or the
    local emulators): the same view as the operator page."""
    from deepskin.loop import ops  # pylint: disable=import-outside-toplevel  # the Google clients, for this command only

    if args.rollback:
        try:
            answer = ops.rollback(operator=f"{getpass.getuser()} (deepskin models --rollback)")
        except RuntimeError as exc:  # nothing to roll back to
            report_error(args.json, "no_rollback", str(exc))
            return OTHER
        print(json.dumps(answer, indent=2) if args.json else
              f"Now serving {answer['current']} (rolled back from {answer['rolled_back_from']}).")
        return OK
    view = ops.overview()
    print(json.dumps(view, indent=2) if args.json else describe_models(view, ops.number))
    return OK


def describe_models(view: dict, number) -> str:
    """The overview in plain lines; `number` formats a model's number (deepskin.loop.ops.number)."""
    model = view["model"] or {}
    lines = [f"Serving: {view['current'] or 'no model registered yet'}"]
    lines += [f"  {name}: {number(value)}" for name, value in model.get("numbers", {}).items()]
    lines.append("Decisions, newest first:" if view["decisions"] else "Decisions: none yet")
    for decision in view["decisions"]:
        verdict = ("ROLLBACK" if decision["kind"] == "rollback" else "PROMOTED" if decision["promoted"]
                   else "PENDING" if decision.get("status") == "approved_pending" else "refused")
        lines.append(f"  {decision['decided_at']}  {verdict:<8}  {decision['candidate']} (was {decision['current']})"
                     f"  job {decision['job_id'] or '-'}")
        lines += [f"      {reason}" for reason in decision["reasons"]]
    feedback = "; ".join(f"{role}: " + ", ".join(f"{label} {n}" for label, n in labels.items())
                         for role, labels in view["feedback"].items())
    lines.append(f"Feedback: {feedback or 'none'}")
    ledger = view["ledger"]
    running = ledger["running_job"]
    job = f"{running['id']} ({running.get('status')})" if running else "none"
    lines.append(f"Ledger: {ledger['training_labels']} training labels ({ledger['labels_at_last_job']} at the last "
                 f"job), {ledger['signals']} signals; running job: {job}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    root = Parser(prog="deepskin", description=__doc__.split("\n\n")[0],
                  formatter_class=argparse.RawDescriptionHelpFormatter, epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    commands = root.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the fields as JSON")

    def command(name: str, run, help_text: str, *plain: str, extra=()) -> argparse.ArgumentParser:
        """A subcommand with the common options, `run` as handler and `plain` arguments (name only, no settings)."""
        sub = commands.add_parser(name, parents=[common, *extra], help=help_text)
        sub.set_defaults(run=run)
        for arg in plain:
            sub.add_argument(arg)
        return sub

    about = argparse.ArgumentParser(add_help=False)  # optional facts that sharpen the answer
    about.add_argument("--age", help="age in years")
    about.add_argument("--sex", choices=SEXES)
    about.add_argument("--site", help=f"body site: {', '.join(SITES)}")
    for question, asked in ASKED.items():
        about.add_argument(f"--{question}", metavar="yes|no", help=asked)

    upload = command("upload", cmd_upload, "upload through the bucket (event path)", "image", extra=[about])
    upload.add_argument("--wait", action="store_true", help="wait for the result")
    upload.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default 60)")

    predict = command("predict", cmd_predict, "assess through the HTTP API", "image", extra=[about])
    predict.add_argument("--heatmap", metavar="PNG", help="save the heatmap (where the model looked) here")

    command("result", cmd_result, "show a result", "id", "--token")

    feedback = command("feedback", cmd_feedback, "report the true label of a result", "id")
    feedback.add_argument("--label", required=True, choices=(*CLASSES, *COARSE_LABELS))
    feedback.add_argument("--role", choices=("user", "clinician"), default="user")
    feedback.add_argument("--histopathology", action="store_true", help="the label is confirmed by histopathology")
    feedback.add_argument("--comment")
    feedback.add_argument("--idempotency-key", help="repeat a report safely (default: a fresh key)")
    feedback.add_argument("--token")
    feedback.add_argument("--clinician-key", default=os.environ.get("DEEPSKIN_CLINICIAN_KEY"),
                          help="the local stack's clinician key (env DEEPSKIN_CLINICIAN_KEY)")

    command("delete", cmd_delete, "erase a result, its image and its reports", "id", "--token")
    follow_ = command("follow", cmd_follow, "follow a result's spot over time, or add a later result to it", "id",
                      "--token")
    start = follow_.add_mutually_exclusive_group(required=True)
    start.add_argument("--months", type=int, choices=(1, 3, 6, 12),
                       help="start following: keep the history this long (instead of 30 days)")
    start.add_argument("--lesion", metavar="LESION", help="add the result to this followed spot")
    follow_.add_argument("--consent", action="store_true",
                         help="you agree that the photos, results and reports are kept for the months chosen")
    follow_.add_argument("--lesion-token")
    lesion = command("lesion", cmd_lesion, "show a followed spot's history, a reminder, or delete it", "lesion",
                     "--token")
    lesion.add_argument("--reminder", metavar="ICS", help="write a calendar reminder (.ics) here")
    lesion.add_argument("--date", help="the reminder's day, YYYY-MM-DD (default: the suggested one)")
    lesion.add_argument("--delete", action="store_true", help="erase the spot: every photo, result and report in it")
    command("status", cmd_status, "is each component up? (exit 0 if all are)")
    models = command("models", cmd_models, "operators: the served model, promotions, refusals, rollbacks")
    models.add_argument("--rollback", action="store_true", help="serve the previous model version again")
    return root


def wants_json(argv: list[str]) -> bool:
    """--json anywhere on a command line that did not parse (argparse would also take --j, --js or --jso)."""
    return any(len(arg) > 2 and "--json".startswith(arg) for arg in argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parser().parse_args(argv)
    except UsageError as exc:
        as_json = wants_json(argv)
        if not as_json:
            sys.stderr.write(exc.usage)  # a person gets argparse's usage line first
        report_error(as_json, "usage", str(exc))
        return USAGE
    client = Client(clinician_key=getattr(args, "clinician_key", None))
    use_local_emulators(client.urls)
    try:
        return args.run(client, args)
    except UsageError as exc:
        report_error(args.json, "usage", str(exc))
        return USAGE
    except TokensFileError as exc:
        report_error(args.json, "tokens_file", str(exc))
        return OTHER
    except NotFound as exc:
        report_error(args.json, "not_found", str(exc))
        return NOT_FOUND
    except Unavailable as exc:
        report_error(args.json, "unavailable", f"service unavailable: {exc}")
        return UNAVAILABLE
    except Refused as exc:
        report_error(args.json, exc.code, f"refused: {exc}")
        return USAGE if exc.status in (400, 422) else OTHER
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # (a file that cannot be written, a bug): a script still gets JSON
        if not args.json:
            raise
        report_error(True, "unexpected", f"{type(exc).__name__}: {exc}")
        return OTHER


if __name__ == "__main__":
    sys.exit(main())
