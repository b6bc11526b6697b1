"""Django settings of the test identity provider: django-oauth-toolkit as a real OpenID Connect provider.

Everything comes from environment variables set by serve.py; the provider listens on loopback only.
"""

import os
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
DATA = pathlib.Path(os.environ["IDP_DATA_DIR"])
ISSUER = os.environ["IDP_ISSUER"]

SECRET_KEY = os.environ["IDP_SECRET_KEY"]
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
ROOT_URLCONF = "urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "oauth2_provider",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [HERE / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ]
        },
    }
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(DATA / "idp.sqlite3")}}
LOGIN_URL = "/accounts/login/"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]


def _read(path: str) -> str:
    return pathlib.Path(path).read_text(encoding="utf-8")


OAUTH2_PROVIDER = {
    "OIDC_ENABLED": True,
    "OIDC_ISS_ENDPOINT": ISSUER,
    "OIDC_RSA_PRIVATE_KEY": _read(os.environ["IDP_SIGNING_KEY"]),
    "OIDC_RSA_PRIVATE_KEYS_INACTIVE": [
        _read(p) for p in os.environ.get("IDP_INACTIVE_KEYS", "").split(":") if p
    ],
    "SCOPES": {"openid": "OpenID Connect", "profile": "Profile"},
    "DEFAULT_SCOPES": ["openid"],
    "PKCE_REQUIRED": True,
    # Access tokens are RFC 9068 JWTs signed with the OIDC key (tokens.py); refresh tokens stay opaque.
    "ACCESS_TOKEN_GENERATOR": "tokens.signed_access_token",
    "REFRESH_TOKEN_GENERATOR": "oauthlib.oauth2.rfc6749.tokens.random_token_generator",
    "ACCESS_TOKEN_EXPIRE_SECONDS": int(os.environ.get("IDP_TOKEN_LIFETIME", "300")),
    "OAUTH_DEVICE_VERIFICATION_URI": ISSUER + "/device/",
    "DEVICE_FLOW_INTERVAL": 1,
}
LOGGING = {
    "version": 1,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django.request": {"handlers": ["stderr"], "level": "ERROR"}},
}
