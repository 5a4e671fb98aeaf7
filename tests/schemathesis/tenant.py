"""Creates an organization and its first user on the server at argv[1] through the API, and
prints the two tenant headers as schemathesis options."""

import json
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


base = sys.argv[1]
org = post(f"{base}/organizations", {"name": "Schemathesis"})["id"]
# Into an organization with no users, any well-formed X-User-ID may create the first one.
anyone = "00000000-0000-0000-0000-000000000000"
user = post(f"{base}/users", {"email": "fuzz@example.com"}, {"X-Org-ID": org, "X-User-ID": anyone})["id"]
print(f"-H X-Org-ID:{org} -H X-User-ID:{user}")
