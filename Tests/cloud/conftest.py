"""Fixtures for the cloud-gateway tests (issue 13): real parts only, all on 127.0.0.1.

- an OpenID Connect provider: django-oauth-toolkit (idp/serve.py), started per session;
- our gateway (`openshell gateway serve … --oidc-issuer …`) in --plaintext or --disable-gateway-auth mode;
- nginx from Debian as the TLS-terminating reverse proxy (gRPC over HTTP/2 with grpc_pass, the HTTP
  endpoints with proxy_pass), with its own test CA made by openssl;
- the CLI with a private XDG_CONFIG_HOME per test, and a scripted browser (browser.py) for the login.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
AUDIENCE = "openshell-test-gateway"
USER, PASSWORD = "alice", "wonderland-" + secrets.token_hex(4)
AUTOMATION_SECRET = secrets.token_urlsafe(24)

_LIVE: list[subprocess.Popen] = []


def pytest_addoption(parser):
    parser.addoption("--gateway-bin", default=os.environ.get("OPENSHELL_GATEWAY_BIN", str(REPO / ".build/debug/openshell")))


def free_port() -> int:
    """A port below the ephemeral range that was free a moment ago."""
    while True:
        port = random.randint(20000, 32767)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


class ServerExited(RuntimeError):
    """The server being waited for ended before it answered."""


def wait_http(url: str, timeout: float = 30, context=None, proc: subprocess.Popen | None = None) -> None:
    """Waits until `url` answers 200; raises at once (ServerExited) when `proc` has ended."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as r:
                if r.status == 200:
                    return
        except Exception:
            if proc is not None and proc.poll() is not None:
                raise ServerExited(f"{url}: the server exited with status {proc.returncode}")
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def log_tail(path: pathlib.Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def binary(pytestconfig) -> pathlib.Path:
    return pathlib.Path(pytestconfig.getoption("--gateway-bin")).resolve()


@pytest.fixture(scope="session")
def work(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("cloud")


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


class IdP:
    """The running identity provider."""

    def __init__(self, work: pathlib.Path, port: int, keys: list[pathlib.Path]):
        self.work, self.port, self.keys = work, port, keys
        self.issuer = f"http://127.0.0.1:{port}/o"
        self.proc: subprocess.Popen | None = None

    def start(self, signing: pathlib.Path, inactive: list[pathlib.Path] = ()) -> None:
        """Starts the provider and waits until it serves (60 s: a fresh venv's first Django import is slow on a
        busy machine). Its first start takes another free port when the chosen one was taken meanwhile (a CI run
        once lost all 22 provider tests to a start that never listened); later starts keep the issuer's port."""
        first = self.proc is None
        for attempt in range(3):
            log_path = self.work / "idp.log"
            log = open(log_path, "ab")
            cmd = [sys.executable, str(HERE / "idp" / "serve.py"), "--port", str(self.port), "--data", str(self.work / "idp-data"),
                   "--signing-key", str(signing), "--audience", AUDIENCE, "--user", f"{USER}:{PASSWORD}",
                   "--automation-secret", AUTOMATION_SECRET]
            for k in inactive:
                cmd += ["--inactive-key", str(k)]
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
            _LIVE.append(self.proc)
            try:
                wait_http(self.issuer + "/.well-known/openid-configuration", timeout=60, proc=self.proc)
                return
            except ServerExited as e:
                tail = log_tail(log_path)
                if first and attempt < 2 and "Address already in use" in tail:
                    self.port = free_port()
                    self.issuer = f"http://127.0.0.1:{self.port}/o"
                    continue
                raise ServerExited(f"{e}; idp.log:\n{tail}") from None
            except Exception as e:
                raise RuntimeError(f"the identity provider did not answer: {e}; idp.log:\n{log_tail(log_path)}") from None

    def stop(self) -> None:
        if self.proc:
            stop(self.proc)


@pytest.fixture(scope="session")
def idp(work):
    keys = []
    for i in range(2):
        k = work / f"idp-key-{i}.pem"
        openssl("genrsa", "-out", str(k), "2048")
        keys.append(k)
    p = IdP(work, free_port(), keys)
    p.start(keys[0])
    yield p
    p.stop()


class Gateway:
    def __init__(self, proc, port, data, log, mode):
        self.proc, self.port, self.data, self.log, self.mode = proc, port, data, log, mode

    @property
    def ca(self) -> pathlib.Path:
        return self.data / "pki" / "ca.crt"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_gateway(binary, work: pathlib.Path, name: str, mode: str, issuer: str, audience: str = AUDIENCE, bind: str = "127.0.0.1") -> Gateway:
    port = free_port()
    data = work / f"{name}-data"
    log = work / f"{name}.log"
    flags = {"plaintext": ["--plaintext"], "tls": ["--disable-gateway-auth"], "mtls": []}[mode]
    cmd = [str(binary), "gateway", "serve", "--data-dir", str(data), "--port", str(port), "--bind", bind, *flags,
           "--oidc-issuer", issuer, "--oidc-audience", audience, "--oidc-client-id", "openshell-cli"]
    env = dict(os.environ, XDG_STATE_HOME=str(work / f"{name}-state"))
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    _LIVE.append(proc)
    gw = Gateway(proc, port, data, log, mode)
    deadline = time.monotonic() + 60
    while "listening on" not in gw.log_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError("gateway did not start:\n" + gw.log_text())
        time.sleep(0.2)
    return gw


class Proxy:
    """nginx in front of a gateway: TLS with the test CA, gRPC via grpc_pass, HTTP via proxy_pass."""

    def __init__(self, work: pathlib.Path, name: str):
        self.dir = work / f"nginx-{name}"
        self.dir.mkdir()
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self, pki: pathlib.Path, upstream: Gateway | None, *, strip_authorization: bool = False) -> None:
        d = self.dir
        if upstream is None:  # a TLS web server that is not a gateway
            locations = "location / { return 404; }"
        else:
            tls = upstream.mode != "plaintext"
            grpc_upstream = f"{'grpcs' if tls else 'grpc'}://127.0.0.1:{upstream.port}"
            http_upstream = f"{'https' if tls else 'http'}://127.0.0.1:{upstream.port}"
            grpc_tls = (f"grpc_ssl_trusted_certificate {upstream.ca}; grpc_ssl_verify on; grpc_ssl_name localhost; "
                        f"grpc_ssl_server_name on;") if tls else ""
            http_tls = (f"proxy_ssl_trusted_certificate {upstream.ca}; proxy_ssl_verify on; proxy_ssl_name localhost; "
                        f"proxy_ssl_server_name on;") if tls else ""
            strip = 'grpc_set_header Authorization "";' if strip_authorization else ""
            locations = f"""
    location ~ ^/openshell\\. {{
      grpc_pass {grpc_upstream}; {grpc_tls} {strip}
      grpc_read_timeout 1h; grpc_send_timeout 1h;
    }}
    location / {{ proxy_pass {http_upstream}; proxy_http_version 1.1; {http_tls} }}"""
        conf = f"""
user root;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log {d}/access.log;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{self.port} ssl http2;
    ssl_certificate {pki}/proxy.crt; ssl_certificate_key {pki}/proxy.key;
    {locations}
  }}
}}
"""
        (d / "nginx.conf").write_text(conf)
        self.proc = subprocess.Popen(["nginx", "-p", str(d), "-e", str(d / "error.log"), "-c", str(d / "nginx.conf"), "-g", "daemon off;"],
                                     stdout=subprocess.DEVNULL, stderr=open(d / "stderr.log", "wb"), start_new_session=True)
        _LIVE.append(self.proc)
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("nginx did not start: " + (d / "stderr.log").read_text() + (d / "error.log").read_text())
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc:
            stop(self.proc)


@pytest.fixture(scope="session")
def proxy_pki(work) -> pathlib.Path:
    """A test CA and a certificate for 127.0.0.1 signed by it, for nginx."""
    d = work / "proxy-pki"
    d.mkdir()
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(d / "ca.key"),
            "-out", str(d / "ca.crt"), "-days", "2", "-subj", "/CN=openshell test proxy CA")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(d / "proxy.key"),
            "-out", str(d / "proxy.csr"), "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", str(d / "proxy.csr"), "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
            "-CAcreateserial", "-out", str(d / "proxy.crt"), "-days", "2", "-extfile", str(d / "ext.cnf"))
    return d


@pytest.fixture(scope="session")
def plaintext_gateway(binary, work, idp):
    gw = start_gateway(binary, work, "plain", "plaintext", idp.issuer)
    yield gw
    stop(gw.proc)


@pytest.fixture(scope="session")
def tls_gateway(binary, work, idp):
    gw = start_gateway(binary, work, "tls", "tls", idp.issuer)
    yield gw
    stop(gw.proc)


@pytest.fixture(scope="session")
def proxied_plaintext(work, proxy_pki, plaintext_gateway):
    p = Proxy(work, "plain")
    p.start(proxy_pki, plaintext_gateway)
    yield p
    p.stop()


@pytest.fixture(scope="session")
def proxied_tls(work, proxy_pki, tls_gateway):
    p = Proxy(work, "tls")
    p.start(proxy_pki, tls_gateway)
    yield p
    p.stop()


@pytest.fixture
def cli(binary, tmp_path):
    """Runs the CLI with a private registry; returns (run, config_home)."""
    home = tmp_path / "xdg"
    env = dict(os.environ, XDG_CONFIG_HOME=str(home), XDG_STATE_HOME=str(tmp_path / "state"), OPENSHELL_NO_BROWSER="1")
    env.pop("OPENSHELL_GATEWAY", None)
    env.pop("DISPLAY", None)

    class CLI:
        config = home / "openshell"

        def run(self, *args, check=True, timeout=60):
            r = subprocess.run([str(binary), *args], env=env, capture_output=True, text=True, timeout=timeout)
            if check and r.returncode != 0:
                raise AssertionError(f"openshell {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
            return r

        def popen(self, *args):
            return subprocess.Popen([str(binary), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def gateway_dir(self, name):
            return self.config / "gateways" / name

    return CLI()


@pytest.fixture(scope="session", autouse=True)
def _cleanup():
    yield
    for p in _LIVE:
        with contextlib.suppress(Exception):
            if p.poll() is None:
                p.kill()
