"""`openshell gateway add https://…` / `gateway login` / `status` / `destroy` against a real identity
provider and a --plaintext gateway behind nginx (TLS terminated by nginx, gRPC over HTTP/2 via grpc_pass).
The browser is browser.py, which follows the provider's redirects and fills in its login form."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import threading
import time

import pytest
import requests

import browser
from conftest import PASSWORD, USER, Proxy, start_gateway, stop

URL_RE = re.compile(r"(http://127\.0\.0\.1:\d+/o/authorize/\S+)")


def login_with_browser(proc, *, password=PASSWORD) -> tuple[int, str, str]:
    """Reads the login URL from the CLI's stderr, logs in with the scripted browser, waits for the CLI."""
    seen = []
    url = None
    deadline = time.monotonic() + 60
    while url is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        m = URL_RE.search(line)
        if m:
            url = m.group(1)
    assert url, "no login URL printed:\n" + "".join(seen)
    page = browser.authorize(url, USER, password)
    assert page.status_code == 200 and "Logged in" in page.text, page.text
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, "".join(seen) + err


def add_cloud(cli, proxy, proxy_pki, name="cloud", *extra):
    proc = cli.popen("gateway", "add", proxy.endpoint, "--name", name, "--ca-file", str(proxy_pki / "ca.crt"), "--no-browser", *extra)
    return login_with_browser(proc)


def test_add_login_use_refresh_destroy_through_nginx(cli, idp, proxied_plaintext, proxy_pki, plaintext_gateway):
    code, out, err = add_cloud(cli, proxied_plaintext, proxy_pki)
    assert code == 0, out + err
    assert "Gateway 'cloud' added and set as active" in out and "Bearer (OIDC)" in out, out
    gdir = cli.gateway_dir("cloud")
    meta = json.loads((gdir / "metadata.json").read_text())
    assert meta["auth_mode"] == "oidc" and meta["type"] == "cloud" and meta["oidc_issuer"] == idp.issuer
    assert meta["oidc_client_id"] == "openshell-cli"
    token_file = gdir / "oidc_token.json"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    tokens = json.loads(token_file.read_text())
    assert tokens["refresh_token"] and tokens["expires_at"] > time.time() and tokens["issuer"] == idp.issuer
    assert (cli.config / "active_gateway").read_text().strip() == "cloud"
    assert tokens["access_token"] not in out + err  # never printed

    # Commands work through nginx with the bearer token; the user is the actor of what they do.
    cli.run("provider", "create", "--name", "cloud-probe", "--type", "generic", "--credential", "K=v")
    listed = cli.run("provider", "list").stdout
    assert "cloud-probe" in listed
    audit = cli.run("audit", "--provider", "cloud-probe", "-o", "jsonl").stdout
    actors = {json.loads(l)["actor"] for l in audit.splitlines() if l.strip()}
    assert actors == {f"oidc:{USER}"}, audit

    status = cli.run("status").stdout
    assert "Bearer (OIDC)" in status and "Token expires" in status and "Connected" in status, status

    # A loosened token file still works, with one warning naming it (never the token).
    token_file.chmod(0o644)
    r = cli.run("provider", "list")
    assert "readable by others" in r.stderr and "chmod 600" in r.stderr and r.stderr.count("warning:") == 1, r.stderr
    token_file.chmod(0o600)

    # A token the gateway refuses (tampered signature): status names the refusal and says to log in again.
    good = token_file.read_text()
    bad = json.loads(good)
    bad["access_token"] = bad["access_token"][:-5] + ("AAAAA" if not bad["access_token"].endswith("AAAAA") else "BBBBB")
    token_file.write_text(json.dumps(bad))
    r = cli.run("status", check=False)
    assert r.returncode != 0 and "refused" in r.stdout and "openshell gateway login cloud" in r.stdout, r.stdout + r.stderr
    token_file.write_text(good)

    # Expired access token: refreshed automatically and written back.
    tokens["expires_at"] = int(time.time()) - 10
    token_file.write_text(json.dumps(tokens))
    cli.run("provider", "list")
    renewed = json.loads(token_file.read_text())
    assert renewed["access_token"] != tokens["access_token"] and renewed["expires_at"] > time.time()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600

    # Several commands at once with an expired token: one refreshes, the others use what it wrote (refresh
    # tokens rotate, so a second refresh with the old one would fail and tell the user to log in).
    renewed["expires_at"] = int(time.time()) - 10
    token_file.write_text(json.dumps(renewed))
    procs = [cli.popen("provider", "list") for _ in range(4)]
    results = [(p.wait(timeout=60), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in results), results
    renewed = json.loads(token_file.read_text())
    assert renewed["expires_at"] > time.time()

    # A refresh the provider refuses: one line that says to log in again, exit != 0.
    renewed["expires_at"] = int(time.time()) - 10
    renewed["refresh_token"] = "revoked-" + renewed["refresh_token"]
    token_file.write_text(json.dumps(renewed))
    r = cli.run("provider", "list", check=False)
    assert r.returncode != 0
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "openshell gateway login cloud" in lines[0], r.stderr

    # gateway login renews it.
    proc = cli.popen("gateway", "login", "cloud", "--no-browser")
    code, out, err = login_with_browser(proc)
    assert code == 0 and "Authenticated to gateway 'cloud'" in out, out + err
    cli.run("provider", "list")

    # Destroying a cloud registration removes only the registration (and its token), not the gateway.
    r = cli.run("gateway", "destroy", "--name", "cloud", "--yes")
    assert "Gateway registration cloud removed." in r.stdout
    assert not gdir.exists()
    assert not list((cli.config / "removed").rglob("oidc_token.json"))
    assert plaintext_gateway.proc.poll() is None
    assert requests.get(f"http://127.0.0.1:{plaintext_gateway.port}/healthz", timeout=5).status_code == 200


def test_http_endpoints_through_nginx(proxied_plaintext, proxy_pki, idp):
    ca = str(proxy_pki / "ca.crt")
    r = requests.get(proxied_plaintext.endpoint + "/readyz", verify=ca, timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "ready"
    r = requests.get(proxied_plaintext.endpoint + "/auth/config", verify=ca, timeout=5)
    assert r.status_code == 200
    d = r.json()
    assert d["auth_mode"] == "oidc" and d["transport"] == "plaintext"
    assert d["oidc"] == {"issuer": idp.issuer, "audience": "openshell-test-gateway", "client_id": "openshell-cli", "scopes": "openid"}
    assert requests.get(proxied_plaintext.endpoint + "/healthz", verify=ca, timeout=5).text == "ok"


def test_device_flow(cli, proxied_plaintext, proxy_pki):
    proc = cli.popen("gateway", "add", proxied_plaintext.endpoint, "--name", "headless", "--ca-file", str(proxy_pki / "ca.crt"),
                     "--device", "--client-id", "openshell-cli-device")
    line = ""
    deadline = time.monotonic() + 60
    while "enter the code" not in line and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
    m = re.search(r"visit (\S+) and enter the code (\S+)", line)
    assert m, line
    page = browser.approve_device(m.group(1), m.group(2), USER, PASSWORD)
    assert "denied" not in page.lower()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    tokens = json.loads((cli.gateway_dir("headless") / "oidc_token.json").read_text())
    assert tokens["client_id"] == "openshell-cli-device"
    cli.run("-g", "headless", "provider", "list")


def no_registration(cli, name):
    assert not cli.gateway_dir(name).exists(), list(cli.gateway_dir(name).parent.iterdir())
    assert not (cli.config / "active_gateway").exists()


def one_error_line(r) -> str:
    assert r.returncode != 0
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_not_a_gateway(cli, work, proxy_pki):
    web = Proxy(work, "not-a-gateway")
    web.start(proxy_pki, None)
    try:
        r = cli.run("gateway", "add", web.endpoint, "--name", "web", "--ca-file", str(proxy_pki / "ca.crt"), "--no-browser", check=False)
        assert "is not an OpenShell gateway" in one_error_line(r)
        no_registration(cli, "web")
        r = cli.run("gateway", "add", "https://127.0.0.1:9", "--name", "nothing", "--no-browser", check=False)
        line = one_error_line(r)
        assert "cannot reach" in line and "connection refused" in line and "SingleConnectionFailure" not in line, line
        no_registration(cli, "nothing")
    finally:
        web.stop()


def test_https_to_a_plaintext_port_says_so(cli, plaintext_gateway):
    r = cli.run("gateway", "add", f"https://127.0.0.1:{plaintext_gateway.port}", "--name", "wrongscheme", "--no-browser", check=False)
    line = one_error_line(r)
    assert "does not speak TLS" in line and "BoringSSL" not in line and ".build" not in line, line
    no_registration(cli, "wrongscheme")


def test_http_server_that_is_not_a_gateway_is_refused(cli, idp):
    # The IdP answers HTTP (404 on /auth/config): not a gateway, so nothing is registered.
    base = idp.issuer.rsplit("/o", 1)[0]
    r = cli.run("gateway", "add", base, "--name", "idphttp", "--no-browser", check=False)
    assert "is not an OpenShell gateway" in one_error_line(r)
    no_registration(cli, "idphttp")


def test_bearer_tokens_never_in_cleartext_beyond_loopback(cli, binary, work, idp):
    # A plaintext OIDC gateway on a non-loopback address (the host side of a veth pair this test creates).
    ns, host_if, peer_if, addr = "osh-cloudtest", "oshct0", "oshct1", "10.254.77.1"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if, "netns", ns], check=True)
        subprocess.run(["ip", "addr", "add", addr + "/30", "dev", host_if], check=True)
        subprocess.run(["ip", "link", "set", host_if, "up"], check=True)
        gw = start_gateway(binary, work, "cleartext", "plaintext", idp.issuer, bind=addr)
        try:
            assert "cleartext" in gw.log_text(), gw.log_text()
            r = cli.run("gateway", "add", f"http://{addr}:{gw.port}", "--name", "clear", "--no-browser", check=False)
            assert "refusing to send bearer tokens in cleartext" in one_error_line(r)
            no_registration(cli, "clear")
        finally:
            stop(gw.proc)
    finally:
        subprocess.run(["ip", "link", "del", host_if], check=False)
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_identity_provider_down(cli, binary, work, proxy_pki):
    gw = start_gateway(binary, work, "idp-down", "plaintext", "http://127.0.0.1:9/o")
    p = Proxy(work, "idp-down")
    p.start(proxy_pki, gw)
    try:
        r = cli.run("gateway", "add", p.endpoint, "--name", "down", "--ca-file", str(proxy_pki / "ca.crt"), "--no-browser", check=False)
        line = one_error_line(r)
        assert "identity provider" in line and "127.0.0.1:9" in line, line
        no_registration(cli, "down")
    finally:
        p.stop()
        stop(gw.proc)


def test_proxy_stripping_the_authorization_header(cli, work, proxy_pki, plaintext_gateway):
    p = Proxy(work, "stripping")
    p.start(proxy_pki, plaintext_gateway, strip_authorization=True)
    try:
        code, out, err = add_cloud(cli, p, proxy_pki, "stripped")
        assert code != 0
        lines = [l for l in err.splitlines() if l.startswith("error") or "did not receive" in l]
        assert any("strip the authorization header" in l for l in lines), err
        no_registration(cli, "stripped")
    finally:
        p.stop()


def test_wrong_password_leaves_nothing(cli, proxied_plaintext, proxy_pki):
    proc = cli.popen("gateway", "add", proxied_plaintext.endpoint, "--name", "nope", "--ca-file", str(proxy_pki / "ca.crt"),
                     "--no-browser", "--login-timeout", "5")
    with pytest.raises(AssertionError):
        login_with_browser(proc, password="wrong-password")
    proc.wait(timeout=30)
    assert proc.returncode != 0
    assert "did not finish" in proc.stderr.read()
    no_registration(cli, "nope")


def test_gateway_start_keeps_its_oidc_settings(cli, idp):
    """`gateway start --plaintext --oidc-…` stores the OIDC settings: a later plain `gateway start` (no flags,
    no OPENSHELL_OIDC_*) must not bring the gateway back without authentication."""
    from conftest import free_port

    port = str(free_port())
    try:
        cli.run("gateway", "start", "--name", "oidc-local", "--plaintext", "--port", port,
                "--oidc-issuer", idp.issuer, "--oidc-audience", "openshell-test-gateway", timeout=120)
        url = f"http://127.0.0.1:{port}/auth/config"
        assert requests.get(url, timeout=5).json()["auth_mode"] == "oidc"
        cli.run("gateway", "stop", "--name", "oidc-local", timeout=60)
        cli.run("gateway", "start", "--name", "oidc-local", timeout=120)
        d = requests.get(url, timeout=5).json()
        assert d["auth_mode"] == "oidc" and d["oidc"]["issuer"] == idp.issuer
        r = cli.run("gateway", "start", "--name", "oidc-local", "--oidc-issuer", "https://other.example.com", "--oidc-audience", "x", check=False)
        assert r.returncode != 0 and "OIDC issuer" in r.stderr
    finally:
        cli.run("gateway", "stop", "--name", "oidc-local", check=False, timeout=60)
