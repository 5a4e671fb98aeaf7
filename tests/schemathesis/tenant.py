"""Makes the caller of a schemathesis run on the server at argv[1] in AUTH_MODE argv[2], and
prints it as schemathesis options, one argument a line.

headers: an organization and its first user, made through the API; the two tenant headers.
keys: a sign-up with the admin token (ADMIN_TOKEN in the environment); the owner key alone.

Either way, the last line is `org_id user_id key_id`, for hooks.py to tell the caller's own rows.
"""

import json
import os
import sys
import urllib.request


def post(url, body, headers=None):
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    with urllib.request.urlopen(request) as response:
        return json.load(response)


base, mode = sys.argv[1], sys.argv[2]
if mode == "keys":
    admin = {"Authorization": f"Bearer {os.environ['ADMIN_TOKEN']}"}
    made = post(
        f"{base}/signup",
        {"organization": {"name": "Schemathesis"}, "owner": {"email": "fuzz@example.com"}},
        admin,
    )
    org, user, key = made["organization"]["id"], made["user"]["id"], made["apiKey"]["key"]
    key_id = made["apiKey"]["id"]
    headers = [f"Authorization: Bearer {key}"]
else:
    org = post(f"{base}/organizations", {"name": "Schemathesis"})["id"]
    # Into an organization with no users, any well-formed X-User-ID may create the first one.
    anyone = "00000000-0000-0000-0000-000000000000"
    user = post(f"{base}/users", {"email": "fuzz@example.com"}, {"X-Org-ID": org, "X-User-ID": anyone})["id"]
    headers = [f"X-Org-ID: {org}", f"X-User-ID: {user}"]
    key_id = "none"
for header in headers:
    print("-H")
    print(header)
print(org, user, key_id)
