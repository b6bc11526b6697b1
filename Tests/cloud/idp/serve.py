"""Starts the test OpenID Connect provider (django-oauth-toolkit) on 127.0.0.1.

    python serve.py --port P --data DIR --signing-key KEY.pem [--inactive-key OLD.pem] --audience A
                    --user NAME:PASSWORD --automation-secret S [--token-lifetime SECONDS]

Creates (idempotently) the user and three clients: `openshell-cli` (public, authorization code + PKCE,
loopback redirect on any port), `openshell-cli-device` (public, device authorization grant) and
`openshell-automation` (confidential, client credentials). Prints `ready <issuer>` when it serves.
"""

import argparse
import os
import pathlib
import secrets
import socketserver
import sys
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

HERE = pathlib.Path(__file__).resolve().parent


class ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the stdlib's name
        sys.stderr.write("idp: " + (format % args) + "\n")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--signing-key", required=True)
    p.add_argument("--inactive-key", action="append", default=[])
    p.add_argument("--audience", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--automation-secret", required=True)
    p.add_argument("--token-lifetime", type=int, default=300)
    a = p.parse_args()

    issuer = f"http://127.0.0.1:{a.port}/o"
    os.environ.update(
        IDP_DATA_DIR=a.data,
        IDP_ISSUER=issuer,
        IDP_SECRET_KEY=secrets.token_urlsafe(32),
        IDP_SIGNING_KEY=a.signing_key,
        IDP_INACTIVE_KEYS=":".join(a.inactive_key),
        IDP_AUDIENCE=a.audience,
        IDP_TOKEN_LIFETIME=str(a.token_lifetime),
        DJANGO_SETTINGS_MODULE="settings",
    )
    sys.path.insert(0, str(HERE))
    pathlib.Path(a.data).mkdir(parents=True, exist_ok=True)

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application
    from oauth2_provider.models import get_application_model

    call_command("migrate", verbosity=0, interactive=False)
    name, password = a.user.split(":", 1)
    User = get_user_model()
    user, _ = User.objects.get_or_create(username=name)
    user.set_password(password)
    user.save()
    App = get_application_model()
    clients = [
        ("openshell-cli", App.CLIENT_PUBLIC, App.GRANT_AUTHORIZATION_CODE, "http://127.0.0.1/callback", ""),
        ("openshell-cli-device", App.CLIENT_PUBLIC, App.GRANT_DEVICE_CODE, "", ""),
        ("openshell-automation", App.CLIENT_CONFIDENTIAL, App.GRANT_CLIENT_CREDENTIALS, "", a.automation_secret),
    ]
    for client_id, kind, grant, redirect, secret in clients:
        if App.objects.filter(client_id=client_id).exists():
            continue
        App.objects.create(
            client_id=client_id, name=client_id, client_type=kind, authorization_grant_type=grant,
            redirect_uris=redirect, client_secret=secret, skip_authorization=True, algorithm="RS256", user=user,
        )

    httpd = make_server("127.0.0.1", a.port, get_wsgi_application(), server_class=ThreadingServer, handler_class=QuietHandler)
    print(f"ready {issuer}", flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
