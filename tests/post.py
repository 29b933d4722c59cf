"""The functional tests' one HTTP call: POST a body, get (status, parsed JSON answer), 4xx and 5xx included."""

import json
import urllib.error
import urllib.request


def post(url: str, body: bytes, timeout_s: float = 60.0):
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
