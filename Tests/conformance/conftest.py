"""Session fixtures: start OUR gateway binary as a real process and point the SDK at it.

The SDK finds a gateway exactly as it would on a user's machine: through
$XDG_CONFIG_HOME/openshell/{active_gateway, gateways/<name>/metadata.json, gateways/<name>/mtls/*}.
Nothing here fakes a server; every fixture runs `openshell gateway serve`.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid
from dataclasses import dataclass

import pytest

import openshell

REPO = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_GATEWAY_BIN = REPO / ".build" / "debug" / "openshell"

STARTUP_TIMEOUT_S = 60.0
SHUTDOWN_TIMEOUT_S = 15.0
PROBE_TIMEOUT_S = 2.0
# Per-call deadline for the SDK clients used by the tests (SDK default is 30 s).
CLIENT_TIMEOUT_S = 15.0

MTLS_GATEWAY = "conformance-mtls"
MTLS_NOCERT_GATEWAY = "conformance-mtls-nocert"  # same gateway, CA only, no client identity
PLAINTEXT_GATEWAY = "conformance-plaintext"
NOAUTH_GATEWAY = "conformance-noauth"

_LIVE_PROCESSES: list[subprocess.Popen] = []


@atexit.register
def _kill_leftovers() -> None:
    # Safety net if pytest dies before fixture teardown: only our own children, by pid.
    for proc in _LIVE_PROCESSES:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--gateway-bin",
        default=os.environ.get("OPENSHELL_GATEWAY_BIN", str(DEFAULT_GATEWAY_BIN)),
        help="path of our `openshell` binary (default: $REPO/.build/debug/openshell)",
    )


# --------------------------------------------------------------------------- gateway process


@dataclass
class Gateway:
    """One running `openshell gateway serve` process."""

    name: str
    mode: str  # "mtls" | "plaintext" | "noauth"
    port: int
    data_dir: pathlib.Path
    log_path: pathlib.Path
    proc: subprocess.Popen

    @property
    def scheme(self) -> str:
        return "http" if self.mode == "plaintext" else "https"

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def pki(self) -> pathlib.Path:
        return self.data_dir / "pki"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])


_HANDED_OUT: set[int] = set()


def _free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago, below the kernel's ephemeral range.

    A port from bind(0) lies in the ephemeral range (32768-60999) and can be taken a moment later as the
    source port of an outgoing connection, so pick from 20000-32767 instead.
    """
    import random

    while True:
        port = random.randint(20000, 32767)
        if port in _HANDED_OUT:
            continue
        _HANDED_OUT.add(port)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def _required_pki(mode: str) -> tuple[str, ...]:
    if mode == "mtls":
        return ("ca.crt", "client.crt", "client.key")
    if mode == "noauth":
        return ("ca.crt",)
    return ()


def _probe_healthz(gw: Gateway) -> bool:
    """GET /healthz over the gateway's own port (HTTP/1.1, ALPN http/1.1 under TLS)."""
    conn: http.client.HTTPConnection
    if gw.mode == "plaintext":
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=PROBE_TIMEOUT_S)
    else:
        ctx = ssl.create_default_context(cafile=str(gw.pki / "ca.crt"))
        ctx.set_alpn_protocols(["http/1.1"])
        if gw.mode == "mtls":
            ctx.load_cert_chain(str(gw.pki / "client.crt"), str(gw.pki / "client.key"))
        conn = http.client.HTTPSConnection(
            "127.0.0.1", gw.port, timeout=PROBE_TIMEOUT_S, context=ctx
        )
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException, ssl.SSLError):
        return False
    finally:
        conn.close()


def _probe_grpc_health(gw: Gateway) -> bool:
    """gRPC Health through the SDK's own client class."""
    tls = None
    if gw.mode == "mtls":
        tls = openshell.TlsConfig(
            ca_path=gw.pki / "ca.crt",
            cert_path=gw.pki / "client.crt",
            key_path=gw.pki / "client.key",
        )
    elif gw.mode == "noauth":
        tls = openshell.TlsConfig(ca_path=gw.pki / "ca.crt")
    client = openshell.SandboxClient(f"127.0.0.1:{gw.port}", tls=tls, timeout=PROBE_TIMEOUT_S)
    try:
        client.health()
        return True
    except Exception:
        return False
    finally:
        client.close()


def _wait_ready(gw: Gateway) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if gw.proc.poll() is not None:
            raise RuntimeError(
                f"gateway {gw.name} exited with code {gw.proc.returncode} during startup\n"
                f"--- log {gw.log_path} ---\n{gw.log_tail()}"
            )
        if all((gw.pki / f).is_file() for f in _required_pki(gw.mode)):
            if _probe_healthz(gw) or _probe_grpc_health(gw):
                return
        time.sleep(0.25)
    raise TimeoutError(
        f"gateway {gw.name} ({gw.endpoint}) not healthy within {STARTUP_TIMEOUT_S:.0f} s "
        f"(needs pki files {_required_pki(gw.mode)} in {gw.pki} and /healthz or gRPC Health)\n"
        f"--- log {gw.log_path} ---\n{gw.log_tail()}"
    )


def _start_gateway(binary: pathlib.Path, base: pathlib.Path, name: str, mode: str) -> Gateway:
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(
            f"gateway binary not found or not executable: {binary} "
            "(build with `swift build`, or pass --gateway-bin PATH)",
            pytrace=False,
        )
    extra = {"mtls": [], "plaintext": ["--plaintext"], "noauth": ["--disable-gateway-auth"]}[mode]
    # Keep the gateway's own XDG dirs away from the SDK config we write and from $HOME.
    env = dict(os.environ)
    for var, sub in (("XDG_CONFIG_HOME", "xdg-config"), ("XDG_STATE_HOME", "xdg-state"),
                     ("XDG_DATA_HOME", "xdg-data")):
        env[var] = str(base / f"{name}-{sub}")
    for attempt in range(3):
        port = _free_port()
        data_dir = base / f"{name}-data-{attempt}"
        data_dir.mkdir(mode=0o700, parents=True)
        log_path = base / f"{name}-{attempt}.log"
        cmd = [str(binary), "gateway", "serve", "--data-dir", str(data_dir),
               "--port", str(port), "--bind", "127.0.0.1", *extra]
        with open(log_path, "wb") as log:
            log.write(("$ " + " ".join(cmd) + "\n").encode())
            log.flush()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True)
        _LIVE_PROCESSES.append(proc)
        gw = Gateway(name, mode, port, data_dir, log_path, proc)
        try:
            _wait_ready(gw)
            return gw
        except RuntimeError as err:  # exited early; retry only a lost port race
            if "address already in use" in gw.log_tail(200).lower() and attempt < 2:
                continue
            message = str(err)
        except TimeoutError as err:
            _stop_gateway(gw, check=False)
            message = str(err)
        pytest.fail(message, pytrace=False)
    raise AssertionError("unreachable")


def _stop_gateway(gw: Gateway, *, check: bool = True) -> None:
    if gw.proc.poll() is None:
        gw.proc.send_signal(signal.SIGTERM)
        try:
            gw.proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            gw.proc.kill()
            gw.proc.wait(timeout=10)
            if check:
                pytest.fail(
                    f"gateway {gw.name} did not exit within {SHUTDOWN_TIMEOUT_S:.0f} s of SIGTERM "
                    f"(killed)\n--- log {gw.log_path} ---\n{gw.log_tail()}",
                    pytrace=False,
                )
    elif check:
        pytest.fail(
            f"gateway {gw.name} had already exited (code {gw.proc.returncode}) before teardown\n"
            f"--- log {gw.log_path} ---\n{gw.log_tail()}",
            pytrace=False,
        )


# --------------------------------------------------------------------------- SDK registry


def register_gateway(
    config_home: pathlib.Path,
    name: str,
    gw: Gateway,
    *,
    mtls_files: dict[str, pathlib.Path] | None = None,
    auth_mode: str | None = None,
) -> pathlib.Path:
    """Write $XDG_CONFIG_HOME/openshell/gateways/<name>/ the way the SDK reads it."""
    gdir = config_home / "openshell" / "gateways" / name
    gdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    metadata: dict[str, object] = {
        "name": name,
        "gateway_endpoint": gw.endpoint,
        "is_remote": False,
        "gateway_port": gw.port,
    }
    if auth_mode is not None:
        metadata["auth_mode"] = auth_mode
    (gdir / "metadata.json").write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    if mtls_files:
        mdir = gdir / "mtls"
        mdir.mkdir(mode=0o700, exist_ok=True)
        for dest, src in mtls_files.items():
            shutil.copyfile(src, mdir / dest)
            if dest.endswith(".key"):
                (mdir / dest).chmod(0o600)
    return gdir


@pytest.fixture(scope="session")
def gateway_bin(pytestconfig: pytest.Config) -> pathlib.Path:
    return pathlib.Path(pytestconfig.getoption("--gateway-bin")).resolve()


@pytest.fixture(scope="session")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("gateways")


@pytest.fixture(scope="session")
def sdk_config_home(tmp_path_factory: pytest.TempPathFactory):
    """A private XDG_CONFIG_HOME for the SDK, set in os.environ for the whole session."""
    home = tmp_path_factory.mktemp("xdg-config")
    saved = {k: os.environ.get(k) for k in ("XDG_CONFIG_HOME", "OPENSHELL_GATEWAY", "no_proxy",
                                             "NO_PROXY")}
    os.environ["XDG_CONFIG_HOME"] = str(home)
    os.environ.pop("OPENSHELL_GATEWAY", None)  # it would override active_gateway
    for var in ("no_proxy", "NO_PROXY"):  # grpc honours proxy variables; never proxy loopback
        os.environ[var] = ",".join(filter(None, [saved[var], "127.0.0.1", "localhost"]))
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def mtls_gateway(gateway_bin, work_dir, sdk_config_home):
    """Default mode (mTLS). Registered as the ACTIVE gateway, plus a CA-only entry."""
    gw = _start_gateway(gateway_bin, work_dir, MTLS_GATEWAY, "mtls")
    try:
        register_gateway(
            sdk_config_home, MTLS_GATEWAY, gw, auth_mode="mtls",
            mtls_files={"ca.crt": gw.pki / "ca.crt", "tls.crt": gw.pki / "client.crt",
                        "tls.key": gw.pki / "client.key"},
        )
        register_gateway(sdk_config_home, MTLS_NOCERT_GATEWAY, gw, auth_mode="mtls",
                         mtls_files={"ca.crt": gw.pki / "ca.crt"})
        (sdk_config_home / "openshell" / "active_gateway").write_text(MTLS_GATEWAY, encoding="utf-8")
    except BaseException:
        _stop_gateway(gw, check=False)
        raise
    yield gw
    _stop_gateway(gw)


@pytest.fixture(scope="session")
def plaintext_gateway(gateway_bin, work_dir, sdk_config_home):
    """`--plaintext`: endpoint http://, no TLS material."""
    gw = _start_gateway(gateway_bin, work_dir, PLAINTEXT_GATEWAY, "plaintext")
    register_gateway(sdk_config_home, PLAINTEXT_GATEWAY, gw, auth_mode="plaintext")
    yield gw
    _stop_gateway(gw)


@pytest.fixture(scope="session")
def noauth_gateway(gateway_bin, work_dir, sdk_config_home):
    """`--disable-gateway-auth`: https, the SDK gets only ca.crt (no client identity)."""
    gw = _start_gateway(gateway_bin, work_dir, NOAUTH_GATEWAY, "noauth")
    register_gateway(sdk_config_home, NOAUTH_GATEWAY, gw, mtls_files={"ca.crt": gw.pki / "ca.crt"})
    yield gw
    _stop_gateway(gw)


# --------------------------------------------------------------------------- SDK clients


@pytest.fixture(scope="session")
def client(mtls_gateway):
    """SandboxClient for the active gateway, found through the on-disk registry."""
    c = openshell.SandboxClient.from_active_cluster(timeout=CLIENT_TIMEOUT_S)
    yield c
    c.close()


@pytest.fixture(scope="session")
def workspaces(client):
    return openshell.WorkspaceClient.from_sandbox_client(client)


@pytest.fixture(scope="session")
def templates(client):
    return openshell.SandboxTemplateClient.from_sandbox_client(client)


@pytest.fixture
def uid() -> str:
    """Short unique suffix for names and labels (DNS-label safe)."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def created_workspaces(workspaces):
    """Tests append workspace names; deleted after the test's sandboxes (best effort)."""
    made: list[str] = []
    yield made
    for name in made:
        with contextlib.suppress(Exception):
            workspaces.delete(name, allow_missing=True)


@pytest.fixture
def created_sandboxes(client, created_workspaces):
    """Tests append (name, workspace); deleted before any created workspace (best effort)."""
    made: list[tuple[str, str]] = []
    yield made
    for name, workspace in made:
        with contextlib.suppress(Exception):
            client.delete(name, workspace=workspace, allow_missing=True)


@pytest.fixture(scope="session")
def nocert_cluster(mtls_gateway) -> str:
    """Registry name of the mTLS gateway with only ca.crt (no client certificate)."""
    return MTLS_NOCERT_GATEWAY
