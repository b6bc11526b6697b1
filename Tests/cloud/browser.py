"""A scripted browser for the identity provider's login: follows redirects as a browser does, fills in
the login form (with its CSRF token and session cookie) and stops at the loopback redirect.

Used by the tests in place of a person at a browser; it talks only to 127.0.0.1.
"""

from __future__ import annotations

import html.parser
import urllib.parse

import requests

MAX_HOPS = 20


class _Forms(html.parser.HTMLParser):
    """Collects the first form's action and its input fields."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._in_form = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = a.get("action") or ""
            self._in_form = True
        elif tag == "input" and self._in_form and a.get("name"):
            self.fields[a["name"]] = a.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self._in_form = False


def _form(page: str) -> _Forms:
    f = _Forms()
    f.feed(page)
    return f


def authorize(url: str, username: str, password: str, *, stop_at: str = "http://127.0.0.1:") -> requests.Response:
    """Opens `url` (an authorization request), logs in and follows redirects until one points at
    `stop_at` (the CLI's loopback listener); that last request is made too, as a browser would, and its
    response is returned."""
    s = requests.Session()
    target = url
    method, data = "GET", None
    logged_in = False
    for _ in range(MAX_HOPS):
        r = s.request(method, target, data=data, allow_redirects=False, timeout=10)
        method, data = "GET", None
        if r.is_redirect or r.status_code in (301, 302, 303, 307, 308):
            nxt = urllib.parse.urljoin(target, r.headers["Location"])
            if nxt.startswith(stop_at) and urllib.parse.urlparse(nxt).path == "/callback":
                return s.get(nxt, timeout=10)
            target = nxt
            continue
        form = _form(r.text)
        if r.status_code == 200 and "password" in form.fields and not logged_in:
            fields = dict(form.fields)
            fields.update(username=username, password=password)
            method, data = "POST", fields
            target = urllib.parse.urljoin(target, form.action or target)
            logged_in = True
            continue
        raise AssertionError(f"login stopped at {target}: HTTP {r.status_code}: {r.text[:300]}")
    raise AssertionError("too many redirects")


def approve_device(verification_uri: str, user_code: str, username: str, password: str) -> str:
    """Enters `user_code` at the device verification page after logging in, and approves the request.
    Returns the final page's text."""
    s = requests.Session()
    target, method, data = verification_uri, "GET", None
    steps: list[str] = []
    for _ in range(MAX_HOPS):
        r = s.request(method, target, data=data, allow_redirects=False, timeout=10)
        method, data = "GET", None
        steps.append(f"{r.status_code} {target}")
        if r.status_code in (301, 302, 303, 307, 308):
            target = urllib.parse.urljoin(target, r.headers["Location"])
            continue
        form = _form(r.text)
        if r.status_code != 200 or form.action is None:
            return r.text
        fields = dict(form.fields)
        if "password" in fields:
            fields.update(username=username, password=password)
        elif "user_code" in fields:
            fields["user_code"] = user_code
        elif "action" in fields or "accept" in r.text.lower():
            fields["action"] = "accept"
        else:
            return r.text
        method, data = "POST", fields
        target = urllib.parse.urljoin(target, form.action or target)
    raise AssertionError("device approval did not finish: " + " | ".join(steps))
