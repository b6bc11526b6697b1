"""The official SDK (openshell 0.1.5) against a --disable-gateway-auth gateway with OIDC behind nginx
(nginx re-encrypts to the gateway: grpcs:// and https:// upstreams verified against the gateway's CA):
`bearer_token=`, `ClientCredentialsAuth`, and `from_active_cluster` on a registration made by the CLI."""

from __future__ import annotations

import uuid

import grpc
import openshell
import pytest
import requests

from conftest import AUTOMATION_SECRET
from test_cli_cloud import add_cloud
from test_bearer_tokens import client_credentials_token


def endpoint(proxy) -> str:
    return f"127.0.0.1:{proxy.port}"


def test_bearer_token(proxied_tls, proxy_pki, idp):
    tls = openshell.TlsConfig(ca_path=proxy_pki / "ca.crt")
    with openshell.SandboxClient(endpoint(proxied_tls), tls=tls, bearer_token=client_credentials_token(idp), timeout=15) as c:
        assert c.health().version
        assert isinstance(c.list(workspace="default").all(), list)
    # Without a token the same call is refused.
    with openshell.SandboxClient(endpoint(proxied_tls), tls=tls, timeout=15) as c:
        with pytest.raises(Exception) as e:
            c.list(workspace="default").all()
        assert "bearer" in str(e.value).lower() or "unauthenticated" in str(e.value).lower()


def test_client_credentials(proxied_tls, proxy_pki, idp):
    auth = openshell.ClientCredentialsAuth(issuer=idp.issuer, client_id="openshell-automation", client_secret=AUTOMATION_SECRET)
    tls = openshell.TlsConfig(ca_path=proxy_pki / "ca.crt")
    with openshell.SandboxClient(endpoint(proxied_tls), tls=tls, client_credentials=auth, timeout=15) as c:
        c.list(workspace="default").all()
    wrong = openshell.ClientCredentialsAuth(issuer=idp.issuer, client_id="openshell-automation", client_secret="not-the-secret")
    with openshell.SandboxClient(endpoint(proxied_tls), tls=tls, client_credentials=wrong, timeout=15) as c:
        with pytest.raises(Exception) as e:
            c.list(workspace="default").all()
        assert "client credentials" in str(e.value).lower()


def test_http_endpoints_and_auth_config(proxied_tls, proxy_pki):
    ca = str(proxy_pki / "ca.crt")
    assert requests.get(proxied_tls.endpoint + "/readyz", verify=ca, timeout=5).json()["status"] == "ready"
    d = requests.get(proxied_tls.endpoint + "/auth/config", verify=ca, timeout=5).json()
    assert d["auth_mode"] == "oidc" and d["transport"] == "tls"


def test_from_active_cluster_after_cli_login(cli, proxied_tls, proxy_pki, monkeypatch):
    code, out, err = add_cloud(cli, proxied_tls, proxy_pki, "sdk-cloud")
    assert code == 0, out + err
    monkeypatch.setenv("XDG_CONFIG_HOME", str(cli.config.parent))
    monkeypatch.delenv("OPENSHELL_GATEWAY", raising=False)
    with openshell.SandboxClient.from_active_cluster(timeout=15) as c:
        c.list(workspace="default").all()
    auth = openshell.ClientCredentialsAuth(client_secret=AUTOMATION_SECRET, client_id="openshell-automation")
    with openshell.SandboxClient.from_active_cluster(timeout=15, client_credentials=auth) as c:
        c.list(workspace="default").all()


def test_sandbox_through_the_proxy(proxied_tls, proxy_pki, idp):
    """A real sandbox on an OIDC gateway: its supervisor authenticates with its sandbox token (no bearer),
    the user creates and execs through nginx with a bearer token."""
    tls = openshell.TlsConfig(ca_path=proxy_pki / "ca.crt")
    name = "oidc-" + uuid.uuid4().hex[:6]
    with openshell.SandboxClient(endpoint(proxied_tls), tls=tls, bearer_token=lambda: client_credentials_token(idp), timeout=60) as c:
        c.create(workspace="default", name=name)
        try:
            c.wait_ready(name, workspace="default", timeout_seconds=120)
            result = c.exec(name, ["echo", "through-nginx"], workspace="default")
            assert result.exit_code == 0 and "through-nginx" in result.stdout
        finally:
            c.delete(name, workspace="default", allow_missing=True)
