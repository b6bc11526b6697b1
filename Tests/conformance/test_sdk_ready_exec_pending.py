"""PENDING (not run yet): the READY + exec flow of wire-contract.md section 4.

Needs a compute driver; until then our sandboxes stay PROVISIONING. Enable with
OPENSHELL_CONFORMANCE_READY=1 once sandboxes really run.
"""

from __future__ import annotations

import os

import pytest

import openshell

if os.environ.get("OPENSHELL_CONFORMANCE_READY") != "1":
    pytest.skip("pending: no compute driver yet (set OPENSHELL_CONFORMANCE_READY=1)",
                allow_module_level=True)


def test_sandbox_context_ready_exec_and_delete(mtls_gateway):
    with openshell.Sandbox(workspace="default", ready_timeout_seconds=120) as sb:
        assert sb.sandbox.phase == 2, f"not READY: {sb.sandbox!r}"
        ok = sb.exec(["echo", "hello"], env={"X": "1"}, timeout_seconds=60)
        assert (ok.exit_code, ok.stdout) == (0, "hello\n"), repr(ok)
        bad = sb.exec(["sh", "-c", "echo oops >&2; exit 3"])
        assert (bad.exit_code, bad.stderr) == (3, "oops\n"), repr(bad)
        name = sb.sandbox.name
    with openshell.SandboxClient.from_active_cluster() as client:
        client.wait_deleted(name, workspace="default", timeout_seconds=60)
