"""The gateway's bearer-token checks, called directly over gRPC (no proxy) as an attacker would:
no token, tokens from the real identity provider, and forged, expired, wrong-audience, wrong-issuer,
tampered, unknown-key and unsigned tokens. Refusals must be UNAUTHENTICATED with the reason, and land in
the audit log as audit.access_refused."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid

import grpc
import pytest
import requests
from jwcrypto import jwk, jwt
from openshell._proto import datamodel_pb2, openshell_pb2, openshell_pb2_grpc

from conftest import AUDIENCE, AUTOMATION_SECRET


def client_credentials_token(idp) -> str:
    r = requests.post(idp.issuer + "/token/", data={
        "grant_type": "client_credentials", "client_id": "openshell-automation", "client_secret": AUTOMATION_SECRET}, timeout=10)
    r.raise_for_status()
    return r.json()["access_token"]


def mint(key_file, **overrides) -> str:
    """A token signed with `key_file` (the identity provider's own key unless stated), claims overridable."""
    key = jwk.JWK.from_pem(key_file.read_bytes())
    now = int(time.time())
    claims = {"iss": overrides.pop("iss"), "sub": "mallory", "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 300,
              "jti": str(uuid.uuid4())}
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    t = jwt.JWT(header={"alg": "RS256", "kid": key.thumbprint()}, claims=json.dumps(claims))
    t.make_signed_token(key)
    return t.serialize()


def b64(d: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()


@pytest.fixture
def stub(plaintext_gateway):
    ch = grpc.insecure_channel(f"127.0.0.1:{plaintext_gateway.port}")
    yield openshell_pb2_grpc.OpenShellStub(ch)
    ch.close()


def call(stub, token: str | None):
    md = [("authorization", f"Bearer {token}")] if token is not None else []
    return stub.ListProviders(openshell_pb2.ListProvidersRequest(), metadata=md, timeout=10)


def refused(stub, token) -> str:
    with pytest.raises(grpc.RpcError) as e:
        call(stub, token)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, e.value
    return e.value.details()


def test_health_is_public_everything_else_needs_a_token(stub):
    assert stub.Health(openshell_pb2.HealthRequest(), timeout=10).version
    assert "missing bearer token" in refused(stub, None)
    with pytest.raises(grpc.RpcError) as e:
        stub.ListProviders(openshell_pb2.ListProvidersRequest(), metadata=[("authorization", "Basic YWxpY2U6eA==")], timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and "not a Bearer token" in e.value.details()
    # A sandbox token alone opens supervisor RPCs (checked by their handlers), never user RPCs.
    with pytest.raises(grpc.RpcError) as e:
        stub.ListProviders(openshell_pb2.ListProvidersRequest(), metadata=[("x-openshell-sandbox-token", "00")], timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_token_from_the_identity_provider_is_accepted(stub, idp):
    token = client_credentials_token(idp)
    call(stub, token)  # no exception: accepted


def test_bad_tokens_are_refused_with_the_reason(stub, idp):
    key = idp.keys[0]
    now = int(time.time())
    assert "expired" in refused(stub, mint(key, iss=idp.issuer, exp=now - 3600, iat=now - 7200, nbf=now - 7200))
    assert "audience" in refused(stub, mint(key, iss=idp.issuer, aud="someone-else"))
    assert "issuer" in refused(stub, mint(key, iss="http://127.0.0.1:9/evil"))
    assert "not valid before" in refused(stub, mint(key, iss=idp.issuer, nbf=now + 3600))
    # Tampered: a valid token whose payload is swapped for another subject, signature kept.
    good = client_credentials_token(idp)
    h, p, s = good.split(".")
    payload = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    payload["sub"] = "admin"
    assert "signature" in refused(stub, ".".join([h, b64(payload), s]))
    # Signed by a key the provider does not publish (its kid is unknown).
    assert "not among the issuer's keys" in refused(stub, mint(idp.keys[1], iss=idp.issuer))
    # Unsigned and HMAC tokens are refused before any key is used.
    assert "not accepted" in refused(stub, b64({"alg": "none"}) + "." + b64({"iss": idp.issuer, "sub": "x", "aud": AUDIENCE, "exp": now + 60}) + ".x")
    assert "not accepted" in refused(stub, b64({"alg": "HS256", "kid": "k"}) + "." + b64({"sub": "x"}) + ".c2ln")
    assert "not a signed JWT" in refused(stub, "garbage")
    # A good token with junk appended: malformed, in words (not the JWT library's internal error).
    junk = refused(stub, good + " extra")
    assert "malformed" in junk and "DecodingError" not in junk, junk
    # Missing claims.
    assert "claim" in refused(stub, mint(key, iss=idp.issuer, exp=None))


def replay_audit(binary, gw, *args) -> list[dict]:
    """`openshell-replay audit` on the live log (read-only), as JSON lines."""
    r = subprocess.run([str(binary.parent / "openshell-replay"), "audit", str(gw.data / "log"), *args, "-o", "jsonl"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def test_refusals_are_audited(stub, idp, plaintext_gateway, binary):
    marker = "audit-probe-" + uuid.uuid4().hex[:6]
    assert marker in refused(stub, mint(idp.keys[0], iss=idp.issuer, aud=marker))
    # The refusal window (10 s) closes, then one audit.access_refused event carries the reason.
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        events = [e for e in replay_audit(binary, plaintext_gateway, "--type", "audit.access_refused") if marker in json.dumps(e)]
        if events:
            break
        time.sleep(1)
    else:
        raise AssertionError("no audit.access_refused event naming the refused audience")
    text = json.dumps(events[0])
    assert "UNAUTHENTICATED" in text and "ListProviders" in text and "audience" in text, text


def test_subject_is_the_actor(stub, idp, plaintext_gateway, binary):
    name = "actor-probe-" + uuid.uuid4().hex[:6]
    token = client_credentials_token(idp)
    provider = datamodel_pb2.Provider(metadata=datamodel_pb2.ObjectMeta(name=name), type="generic", credentials={"K": "v"})
    stub.CreateProvider(openshell_pb2.CreateProviderRequest(provider=provider), metadata=[("authorization", f"Bearer {token}")], timeout=10)
    events = replay_audit(binary, plaintext_gateway, "--provider", name)
    assert events, "no event for the new provider"
    assert {e["actor"] for e in events} == {"oidc:client:openshell-automation"}, events


def test_mtls_and_bearer_together(binary, work, idp):
    """An mTLS gateway with OIDC: the client certificate is still required by TLS; a certificate alone
    authenticates as before; with a token on top the token must verify and its subject is the actor."""
    from conftest import start_gateway, stop

    gw = start_gateway(binary, work, "mtls-oidc", "mtls", idp.issuer)
    try:
        pki = gw.data / "pki"
        creds = grpc.ssl_channel_credentials(
            root_certificates=(pki / "ca.crt").read_bytes(), private_key=(pki / "client.key").read_bytes(),
            certificate_chain=(pki / "client.crt").read_bytes())
        ch = grpc.secure_channel(f"127.0.0.1:{gw.port}", creds)
        stub = openshell_pb2_grpc.OpenShellStub(ch)
        stub.ListProviders(openshell_pb2.ListProvidersRequest(), timeout=10)  # certificate alone
        assert "expired" in refused(stub, mint(idp.keys[0], iss=idp.issuer, exp=int(time.time()) - 3600))
        name = "mtls-probe-" + uuid.uuid4().hex[:6]
        provider = datamodel_pb2.Provider(metadata=datamodel_pb2.ObjectMeta(name=name), type="generic", credentials={"K": "v"})
        stub.CreateProvider(openshell_pb2.CreateProviderRequest(provider=provider),
                            metadata=[("authorization", f"Bearer {client_credentials_token(idp)}")], timeout=10)
        assert {e["actor"] for e in replay_audit(binary, gw, "--provider", name)} == {"oidc:client:openshell-automation"}
        ch.close()
        # Without a client certificate the TLS handshake itself fails, token or not.
        ch = grpc.secure_channel(f"127.0.0.1:{gw.port}", grpc.ssl_channel_credentials(root_certificates=(pki / "ca.crt").read_bytes()))
        with pytest.raises(grpc.RpcError) as e:
            openshell_pb2_grpc.OpenShellStub(ch).ListProviders(
                openshell_pb2.ListProvidersRequest(), metadata=[("authorization", f"Bearer {client_credentials_token(idp)}")], timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        ch.close()
    finally:
        stop(gw.proc)


@pytest.mark.parametrize("args, needle", [
    (["--oidc-issuer", "http://idp.example.com/o", "--oidc-audience", "a"], "https://"),
    (["--oidc-issuer", "https://idp.example.com/o"], "--oidc-audience is required"),
    (["--oidc-audience", "a"], "need --oidc-issuer"),
    (["--oidc-issuer", "not a url", "--oidc-audience", "a"], "is not a URL"),
])
def test_bad_oidc_configuration_is_one_line(binary, tmp_path, args, needle):
    r = subprocess.run([str(binary), "gateway", "serve", "--data-dir", str(tmp_path / "d"), "--port", "0", "--plaintext", *args],
                       capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode != 0 and len(lines) == 1 and needle in lines[0], r.stderr


def test_clock_skew_tolerance(stub, idp):
    """60 s of tolerance for exp/nbf: 30 s past expiry is accepted, 120 s past is not."""
    now = int(time.time())
    call(stub, mint(idp.keys[0], iss=idp.issuer, exp=now - 30, iat=now - 300, nbf=now - 300))
    assert "expired" in refused(stub, mint(idp.keys[0], iss=idp.issuer, exp=now - 120, iat=now - 300, nbf=now - 300))
    call(stub, mint(idp.keys[0], iss=idp.issuer, nbf=now + 30))
