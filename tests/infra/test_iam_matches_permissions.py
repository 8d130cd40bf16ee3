"""The permission table (infra/permissions.py) against the IAM bindings in infra/*.tf, both ways.

Every storage grant of the table must be a binding with the same role and prefix condition, and every
binding a grant of the table; each identity's Firestore role must be the narrowest the table allows. The
other direction, the table against the calls the code makes, is tests/feedback/test_permissions.py.
"""

# pylint: disable=use-implicit-booleaness-not-comparison  # `== []` shows the problems in the diff

from __future__ import annotations

import copy
import re

import permissions
import pytest
from permissions import DELETER, FIRESTORE, STORAGE, Grant
from test_infra import INFRA, firestore_identities, instances, load_dir

MEMBER = re.compile(r'^serviceAccount:\$\{google_service_account\.(?:fn\["(\w+)"\]|(training))\.email\}$')
BUCKET = re.compile(r'^\$\{google_storage_bucket\.data\["(\w+)"\]\.name\}$')
# The condition iam.tf writes for a prefix, once the instance's prefix is filled in.
CONDITION = re.compile(r'^resource\.name\.startsWith\(\\?"projects/_/buckets/\$\{google_storage_bucket\.data\["(\w+)"\]'
                       r'\.name\}/objects/\$\{"([^"]+)"\}\\?"\)$')
CUSTOM_ROLES = {"${google_project_iam_custom_role.object_deleter.id}": DELETER}


@pytest.fixture(scope="module", name="stack")
def fixture_stack() -> dict:
    return load_dir(INFRA)


def identity_of(member: str) -> str | None:
    match = MEMBER.match(member)
    return (match[1] or match[2]) if match else None


def storage_bindings(config: dict) -> tuple[set[tuple[str, Grant]], list[str]]:
    """{(identity, grant)} of every bucket-level binding, and what could not be read as one."""
    found, problems = set(), []
    for name, body in instances(config, "google_storage_bucket_iam_member").items():
        identity, bucket = identity_of(str(body.get("member"))), BUCKET.match(str(body.get("bucket")))
        role = CUSTOM_ROLES.get(body.get("role"), body.get("role"))
        conditions = body.get("condition") or []
        prefix = ""
        if conditions:
            condition = CONDITION.match(str(conditions[0].get("expression")))
            if len(conditions) > 1 or not condition or not bucket or condition[1] != bucket[1]:
                problems.append(f"binding {name}: a condition that is not one object-name prefix of its bucket")
                continue
            prefix = condition[2]
        if identity is None or bucket is None or role not in permissions.ROLES:
            problems.append(f"binding {name}: cannot tell its identity, bucket or role ({body})")
            continue
        found.add((identity, Grant(bucket[1], role, prefix)))
    for rtype in ("google_storage_bucket_iam_binding", "google_storage_bucket_iam_policy"):
        problems += [f"{rtype}.{name}: authoritative bucket IAM is outside the table"
                     for name in config["resource"].get(rtype, {})]
    return found, problems


def check_storage_table(config: dict, table: dict[str, tuple[Grant, ...]]) -> list[str]:
    found, problems = storage_bindings(config)
    wanted = {(identity, grant) for identity, grants in table.items() for grant in grants}
    problems += [f"{identity}: {grant} is in infra/permissions.py but not bound in iam.tf"
                 for identity, grant in sorted(wanted - found, key=str)]
    problems += [f"{identity}: {grant} is bound in iam.tf but not in infra/permissions.py"
                 for identity, grant in sorted(found - wanted, key=str)]
    role = config["resource"].get("google_project_iam_custom_role", {}).get("object_deleter", {})
    if (granted := role.get("permissions")) != ["storage.objects.delete"]:
        problems.append(f"custom role object_deleter must allow storage.objects.delete alone: {granted}")
    return problems


def check_firestore_roles(config: dict, table: dict[str, dict]) -> list[str]:
    granted = {identity: {"roles/datastore.user"} for identity in firestore_identities(config)}
    for name, body in instances(config, "google_project_iam_member").items():
        if str(body.get("role")).startswith("roles/datastore.") and name != "firestore_user":
            granted.setdefault(str(identity_of(str(body.get("member")))), set()).add(body["role"])
    problems = []
    for identity in sorted(set(table) | set(granted)):
        want = permissions.firestore_role(table[identity]) if identity in table else None
        have = sorted(granted.get(identity, set()))
        if have != ([want] if want else []):
            problems.append(f"{identity}: Firestore roles {have} in iam.tf, the table needs {want}")
    return problems


def check_identities(config: dict) -> list[str]:
    """The table names every runtime identity of iam.tf, and nothing else."""
    declared = {*config["locals"].get("function_service_accounts", {}), "training"}
    return [f"identity {name}: in iam.tf or in the table, not both" for name in sorted(declared ^ set(STORAGE))] + \
        [f"identity {name}: no Firestore entry in the table" for name in sorted(declared - set(FIRESTORE))]


def test_the_storage_bindings_are_the_table(stack):
    assert check_storage_table(stack, STORAGE) == []


def test_the_firestore_roles_are_the_narrowest_the_table_allows(stack):
    assert check_firestore_roles(stack, FIRESTORE) == []


def test_the_table_names_every_identity(stack):
    assert check_identities(stack) == []


def test_the_checker_flags_a_grant_missing_on_either_side(stack):
    extra = {**STORAGE, "retrain": (Grant("training", permissions.VIEWER),)}
    assert check_storage_table(stack, extra) == [
        ("retrain: Grant(bucket='training', role='roles/storage.objectViewer', prefix='') is in "
        "infra/permissions.py but not bound in iam.tf")]
    fewer = {**STORAGE, "ops": ()}
    assert check_storage_table(stack, fewer) == [
        ("ops: Grant(bucket='models', role='roles/storage.objectViewer', prefix='') is bound in iam.tf but not in "
        "infra/permissions.py")]


def test_the_checker_flags_a_binding_without_its_prefix(stack):
    broken = copy.deepcopy(stack)
    broken["locals"]["bucket_bindings"]["training|feedback|roles/storage.objectCreator"]["prefix"] = None
    problems = check_storage_table(broken, STORAGE)
    assert len(problems) == 2 and all("feedback" in p and "training" in p for p in problems)


def test_the_checker_flags_a_broader_firestore_role(stack):
    broken = copy.deepcopy(stack)
    broken["resource"]["google_project_iam_member"]["ops_firestore_viewer"]["role"] = "roles/datastore.user"
    assert check_firestore_roles(broken, FIRESTORE) == [
        "ops: Firestore roles ['roles/datastore.user'] in iam.tf, the table needs roles/datastore.viewer"]
    assert check_firestore_roles(stack, {**FIRESTORE, "feedback": {"feedback": permissions.R}}) == [
        "feedback: Firestore roles ['roles/datastore.user'] in iam.tf, the table needs roles/datastore.viewer"]
