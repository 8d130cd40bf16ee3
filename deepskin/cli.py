"""`deepskin`: assess a skin-lesion photo from the command line (a triage aid, never a diagnosis).

    deepskin upload lesion.jpg --wait     # through the uploads bucket, the event path
    deepskin predict lesion.jpg           # through the HTTP API
    deepskin result ID | feedback ID --label mel | delete ID | status

Exit codes scripts can trust: 0 done (or accepted), 2 usage error, 3 image rejected or unusable, 4 not found,
5 service unavailable, 1 anything else. `--json` prints one JSON object on stdout: the result's fields,
or for an error {"error": code, "message": text}.
Capability tokens received here are kept in ~/.deepskin/tokens.json (mode 0600), so `result`, `feedback` and
`delete` work without --token.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deepskin.client import Client, NotFound, Refused, Unavailable, use_local_emulators
from deepskin.labels import CLASS_NAMES, CLASSES, COARSE_LABELS, NOT_A_DIAGNOSIS

OK, OTHER, USAGE, REFUSED_IMAGE, NOT_FOUND, UNAVAILABLE = 0, 1, 2, 3, 4, 5
STATUS_EXIT = {"done": OK, "pending": OK, "rejected": REFUSED_IMAGE, "unusable": REFUSED_IMAGE, "failed": OTHER}


class UsageError(Exception):
    pass


# --- capability tokens ------------------------------------------------------------------------------------

def tokens_path() -> Path:
    return Path.home() / ".deepskin" / "tokens.json"


def load_tokens() -> dict[str, str]:
    try:
        return json.loads(tokens_path().read_text())
    except FileNotFoundError:
        return {}


def save_tokens(tokens: dict[str, str]) -> None:
    """Written to a 0600 file created as such: a token is the only key to someone's photo and result."""
    path = tokens_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(tokens, out, indent=1)
    os.replace(partial, path)


def remember(id_: str, token: str) -> None:
    save_tokens({**load_tokens(), id_: token})


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
    if result.get("advice"):
        lines.append(result["advice"].removesuffix(NOT_A_DIAGNOSIS).strip())
    probabilities = result.get("probabilities") or {}
    for name, p in sorted(probabilities.items(), key=lambda item: -item[1]):
        lines.append(f"  {p:6.1%}  {name:<5} {CLASS_NAMES.get(name, '')}")
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


def cmd_upload(client: Client, args: argparse.Namespace) -> int:
    path = image_path(args.image)
    with spinner("waiting for the result"):
        result = client.upload(path, wait=args.wait, timeout=args.timeout)
    remember(result["id"], result["token"])
    if not args.wait and not args.json:
        print(f"Uploaded as {result['id']}; `deepskin result {result['id']}` once it is assessed.")
        return OK
    return show(result, args.json)


def cmd_predict(client: Client, args: argparse.Namespace) -> int:
    path = image_path(args.image)
    with spinner("assessing"):
        try:
            result = client.predict(path)
        except Refused as refused:
            # The service refuses an empty, oversize or non-image body before assessing it.
            report_error(args.json, refused.code, f"the image was refused: {refused}")
            return REFUSED_IMAGE
    remember(result["id"], result["token"])
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


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    components = client.status()
    all_up = all(c.up for c in components)
    if args.json:
        print(json.dumps({"all_up": all_up, "components": [vars(c) for c in components]}, indent=2))
    else:
        for c in components:
            print(f"{c.name:<10} {'up  ' if c.up else 'DOWN'}  {c.url}  ({c.detail})")
    return OK if all_up else UNAVAILABLE


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="deepskin", description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    commands = root.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the fields as JSON")

    def command(name: str, run, help_text: str, *plain: str) -> argparse.ArgumentParser:
        """A subcommand with the common options, `run` as handler and `plain` arguments (name only, no settings)."""
        sub = commands.add_parser(name, parents=[common], help=help_text)
        sub.set_defaults(run=run)
        for arg in plain:
            sub.add_argument(arg)
        return sub

    upload = command("upload", cmd_upload, "upload through the bucket (event path)", "image")
    upload.add_argument("--wait", action="store_true", help="wait for the result")
    upload.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (default 60)")

    predict = command("predict", cmd_predict, "assess through the HTTP API", "image")
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
    command("status", cmd_status, "is each component up? (exit 0 if all are)")
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits 2 on a usage error
    client = Client(clinician_key=getattr(args, "clinician_key", None))
    use_local_emulators(client.urls)
    try:
        return args.run(client, args)
    except UsageError as exc:
        report_error(args.json, "usage", str(exc))
        return USAGE
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


if __name__ == "__main__":
    sys.exit(main())
