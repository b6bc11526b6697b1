"""Transport conformance: mTLS enforcement, `--plaintext`, `--disable-gateway-auth`.

Each variant is a separate gateway process, found by the SDK through its registry name
(`SandboxClient.from_active_cluster(cluster=...)`).
"""

from __future__ import annotations

import grpc
import pytest

import openshell
from openshell import DeletionOutcome, GatewayError
from openshell._proto import openshell_pb2 as pb

TIMEOUT_S = 10.0


def _expect_unavailable(fn, *args, **kwargs) -> None:
    try:
        fn(*args, **kwargs)
    except GatewayError as err:
        assert err.code() == grpc.StatusCode.UNAVAILABLE, (
            f"expected UNAVAILABLE (TLS handshake refused), got {err.code()}: {err.details()!r}"
        )
        return
    pytest.fail("call without a client certificate succeeded against an mTLS gateway")


def test_mtls_gateway_refuses_client_without_certificate(client, nocert_cluster):
    # Positive control: the same gateway answers the full-mTLS client (so UNAVAILABLE below is
    # the handshake refusal, not a dead gateway).
    assert client.health().status == pb.SERVICE_STATUS_HEALTHY
    nocert = openshell.SandboxClient.from_active_cluster(cluster=nocert_cluster, timeout=TIMEOUT_S)
    try:
        _expect_unavailable(nocert.health)
        _expect_unavailable(nocert.list_all, workspace="default")
    finally:
        nocert.close()


def _smoke(client: openshell.SandboxClient, name: str) -> None:
    health = client.health()
    assert health.status == pb.SERVICE_STATUS_HEALTHY, f"{health}"
    assert health.version, f"{health}"
    sb = client.create(workspace="default", name=name)
    try:
        assert sb.id and sb.name == name and sb.workspace == "default", repr(sb)
        assert client.get(name, workspace="default").id == sb.id
        assert sb.id in client.list_ids(workspace="default")
        ws = openshell.WorkspaceClient.from_sandbox_client(client).get("default")
        assert ws.phase == "WORKSPACE_PHASE_ACTIVE", repr(ws)
    finally:
        result = client.delete(name, workspace="default", allow_missing=True)
    assert result.outcome in (DeletionOutcome.COMPLETED, DeletionOutcome.ACCEPTED), repr(result)


def test_plaintext_gateway_over_http(plaintext_gateway, uid):
    assert plaintext_gateway.endpoint.startswith("http://")
    client = openshell.SandboxClient.from_active_cluster(cluster=plaintext_gateway.name,
                                                         timeout=TIMEOUT_S)
    try:
        _smoke(client, f"conf-plain-{uid}")
    finally:
        client.close()


def test_disable_gateway_auth_accepts_ca_only_client(noauth_gateway, uid):
    assert noauth_gateway.endpoint.startswith("https://")
    client = openshell.SandboxClient.from_active_cluster(cluster=noauth_gateway.name,
                                                         timeout=TIMEOUT_S)
    try:
        _smoke(client, f"conf-noauth-{uid}")
    finally:
        client.close()
