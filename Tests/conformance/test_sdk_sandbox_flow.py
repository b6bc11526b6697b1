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


def test_service_exposures_give_a_working_url(mtls_gateway):
    """CreateSandbox with service_exposures: the SDK's SandboxRef.service_urls names a URL on the
    gateway's port that reaches a python http.server on the sandbox's loopback (client certificate
    required); the default authorization mode strips the caller's Authorization header."""
    import socket
    import ssl
    import time
    import urllib.error
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with openshell.SandboxClient.from_active_cluster() as client:
        ref = client.create(workspace="default", service_exposures=[openshell.ServiceExposure(target_port=port)])
        name = ref.name
        try:
            url = ref.service_urls[""]
            assert url == f"{mtls_gateway.endpoint}/_svc/default/{name}/_/", url
            client.wait_ready(name, workspace="default", timeout_seconds=60)
            server = (
                "import http.server\n"
                "class H(http.server.BaseHTTPRequestHandler):\n"
                "    def do_GET(self):\n"
                "        body = ('%s auth=%s' % (self.path, self.headers.get('Authorization', 'none'))).encode()\n"
                "        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()\n"
                "        self.wfile.write(body)\n"
                f"http.server.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n"
            )
            started = client.exec(
                name, ["sh", "-c", "cat > /sandbox/srv.py; setsid python3 /sandbox/srv.py >/dev/null 2>&1 </dev/null &"],
                workspace="default", stdin=server.encode())
            assert started.exit_code == 0, repr(started)
            context = ssl.create_default_context(cafile=str(mtls_gateway.pki / "ca.crt"))
            context.load_cert_chain(str(mtls_gateway.pki / "client.crt"), str(mtls_gateway.pki / "client.key"))
            request = urllib.request.Request(url + "hello?x=1", headers={"Authorization": "Bearer not-for-the-service"})
            body = None
            for _ in range(50):
                try:
                    with urllib.request.urlopen(request, context=context, timeout=5) as response:
                        body = response.read().decode()
                        break
                except urllib.error.HTTPError as e:
                    assert e.code == 502, e  # not listening yet
                    time.sleep(0.2)
            assert body == "/hello?x=1 auth=none", body
            # Without a client certificate the TLS handshake is refused.
            bare = ssl.create_default_context(cafile=str(mtls_gateway.pki / "ca.crt"))
            try:
                urllib.request.urlopen(url, context=bare, timeout=5).read()
                raise AssertionError("served without a client certificate")
            except (ssl.SSLError, urllib.error.URLError, ConnectionError):
                pass
        finally:
            client.delete(name, workspace="default", allow_missing=True)
            client.wait_deleted(name, workspace="default", timeout_seconds=60)
