"""The SDK's own sandbox flow (wire-contract.md section 4) against our gateway with the local driver.

Real sandboxes: bubblewrap namespaces + the openshell-sandbox supervisor next to the gateway binary.
"""

from __future__ import annotations

import shutil

import pytest

import openshell

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap (scripts/setup.sh)")


def test_sandbox_context_ready_exec_and_delete(mtls_gateway):
    with openshell.Sandbox(workspace="default", ready_timeout_seconds=120) as sb:
        assert sb.sandbox.phase == 2, f"not READY: {sb.sandbox!r}"
        ok = sb.exec(["echo", "hello"], env={"X": "1"}, timeout_seconds=60)
        assert (ok.exit_code, ok.stdout) == (0, "hello\n"), repr(ok)
        env = sb.exec(["sh", "-c", "echo $X"], env={"X": "1"})
        assert env.stdout == "1\n", repr(env)
        bad = sb.exec(["sh", "-c", "echo oops >&2; exit 3"])
        assert (bad.exit_code, bad.stderr) == (3, "oops\n"), repr(bad)
        slow = sb.exec(["sleep", "30"], timeout_seconds=1)
        assert slow.exit_code == 124, repr(slow)
        name = sb.sandbox.name
    with openshell.SandboxClient.from_active_cluster() as client:
        client.wait_deleted(name, workspace="default", timeout_seconds=60)
        with pytest.raises(openshell.GatewayError):
            client.get(name, workspace="default")


def test_stop_start_wait_ready(mtls_gateway):
    with openshell.SandboxClient.from_active_cluster() as client:
        ref = client.create(workspace="default")
        name = ref.name
        try:
            client.wait_ready(name, workspace="default", timeout_seconds=60)
            assert client.exec(name, ["sh", "-c", "echo kept > /sandbox/f"], workspace="default").exit_code == 0
            client.stop(name, workspace="default")
            stopped = client.wait_stopped(name, workspace="default", timeout_seconds=60)
            assert stopped.phase == 7
            with pytest.raises(openshell.GatewayError) as e:
                client.exec(name, ["true"], workspace="default")
            assert "FAILED_PRECONDITION" in str(e.value.code())
            client.start(name, workspace="default")
            ready = client.wait_ready(name, workspace="default", timeout_seconds=60)
            assert ready.phase == 2
            again = client.exec(name, ["cat", "/sandbox/f"], workspace="default")
            assert (again.exit_code, again.stdout) == (0, "kept\n"), repr(again)
        finally:
            client.delete(name, workspace="default", allow_missing=True)
            client.wait_deleted(name, workspace="default", timeout_seconds=60)


def test_image_refused_with_failed_precondition(mtls_gateway):
    from openshell._proto import openshell_pb2

    with openshell.SandboxClient.from_active_cluster() as client:
        spec = openshell_pb2.SandboxSpec(template=openshell_pb2.SandboxTemplate(image="ubuntu:24.04"))
        with pytest.raises(openshell.GatewayError) as e:
            client.create(workspace="default", spec=spec)
        assert "FAILED_PRECONDITION" in str(e.value.code())
        assert "podman" in e.value.details()
