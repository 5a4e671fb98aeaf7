"""What the OpenAPI document cannot state, told to schemathesis.

Two rules of the server reach inside JSON values, where OpenAPI 3.0 schemas cannot follow:

- A flow's step ids are unique within the flow. JSON Schema can say that whole array items are
  unique, not that one key of them is.
- No string or key inside a JSON field (`schema`, `executeIf`, `steps`, `inputs`, `outputs`,
  `error`) contains U+0000, which PostgreSQL cannot store. Top-level text fields say so with a
  pattern; OpenAPI 3.0 has no `propertyNames` for the keys of arbitrary JSON.

A tool's `credentials` must fit its `authType` (the shape per type is in the field's
description), a rule across two fields that the document does not state as a schema. A
credentials object is replaced by a valid one for the body's `authType`, and left out when the
body names none (a `PUT` keeps the stored type, unknown here) or `none`. Any object is valid by
the document, so neither changes whether the body is.

One rule of time: an API key's `expiresAt` must be in the future, which a schema cannot say;
a well-formed time in the past is moved a year past now.

And one rule of the run itself: the caller stays a caller. Schemathesis finds the caller's own
user, organization and key ids (SCHEMATHESIS_ORG_ID, SCHEMATHESIS_USER_ID, SCHEMATHESIS_KEY_ID,
set by scripts/test.sh) in list responses; deleting (revoking) any of them would leave every
later request a 403 or 401 and the rest of the run testing nothing. Such a delete, and an update
of the caller's own user (whose role nobody may change, 403), is sent for the nil id instead
(404).

The stateful phase infers links from field names; one of them follows an execution log's
`runId` to `GET /runs/{id}`, and that field is null for a log written by hand. A null path id
would be sent as the text `None` (400, a malformed id); it is sent as the nil id instead (404).

Before a body is sent, a repeated step id gets a suffix and a NUL inside a JSON field becomes
`?`. Neither changes whether the body is valid by the document, so a schema-valid body stays
valid for the server too and a schema-violating body keeps its violation. The Rust suite holds
both refusals (tests/api/resources.rs).
"""

import datetime
import os

import schemathesis

JSON_FIELDS = ("schema", "executeIf", "steps", "inputs", "outputs", "error")


def _without_nul(value):
    if isinstance(value, str):
        return value.replace("\x00", "?")
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(member) for key, member in value.items()}
    return value


def _unique_step_ids(steps):
    seen = set()
    for index, step in enumerate(steps):
        if isinstance(step, dict) and isinstance(step.get("id"), str):
            if step["id"] in seen:
                step["id"] = f"{step['id']}-{index}"
            seen.add(step["id"])


NIL = "00000000-0000-0000-0000-000000000000"


def _in_the_future(body):
    text = body.get("expiresAt")
    if not isinstance(text, str):
        return
    try:
        at = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return
    if at.tzinfo is None:
        return
    now = datetime.datetime.now(datetime.timezone.utc)
    if at <= now:
        body["expiresAt"] = (now + datetime.timedelta(days=365)).isoformat().replace("+00:00", "Z")


def _spare_the_caller(case):
    method = case.method.upper()
    if method not in ("DELETE", "PUT") or not case.path_parameters:
        return
    caller = {"/users/{id}": os.environ["SCHEMATHESIS_USER_ID"]}
    if method == "DELETE":
        caller["/organizations/{id}"] = os.environ["SCHEMATHESIS_ORG_ID"]
        caller["/api-keys/{id}"] = os.environ["SCHEMATHESIS_KEY_ID"]
    if case.path_parameters.get("id") == caller.get(case.path):
        case.path_parameters["id"] = NIL


CREDENTIALS = {
    "apiKey": {"value": "schemathesis-key"},
    "bearer": {"token": "schemathesis-token"},
    "basic": {"username": "schemathesis", "password": "schemathesis-password"},
    "oauth2": {"tokenUrl": "https://auth.example.com/token", "clientId": "schemathesis",
               "clientSecret": "schemathesis-secret"},
}


def _fitting_credentials(body):
    if not isinstance(body.get("credentials"), dict):
        return
    auth_type = body.get("authType")
    fitting = CREDENTIALS.get(auth_type) if isinstance(auth_type, str) else None
    if fitting is None:
        del body["credentials"]
    else:
        body["credentials"] = dict(fitting)


def _no_null_path_ids(case):
    for name, value in (case.path_parameters or {}).items():
        if value is None or value == "None":
            case.path_parameters[name] = NIL


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    _no_null_path_ids(case)
    _spare_the_caller(case)
    body = case.body
    if not isinstance(body, dict):
        return
    _in_the_future(body)
    _fitting_credentials(body)
    for field in JSON_FIELDS:
        if field in body:
            body[field] = _without_nul(body[field])
    if isinstance(body.get("steps"), list):
        _unique_step_ids(body["steps"])
