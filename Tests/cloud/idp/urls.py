"""URLs: django-oauth-toolkit under /o/ (the issuer is http://127.0.0.1:PORT/o) and a login page.

The discovery document also names the RFC 8628 device authorization endpoint, which the toolkit serves
but does not advertise.
"""

import json

from django.contrib.auth import views as auth_views
from django.urls import include, path, reverse
from oauth2_provider import views as oauth_views


class Discovery(oauth_views.ConnectDiscoveryInfoView):
    def get(self, request, *args, **kwargs):
        response = super().get(request, *args, **kwargs)
        document = json.loads(response.content)
        document["device_authorization_endpoint"] = request.build_absolute_uri(
            reverse("oauth2_provider:device-authorization")
        )
        document.setdefault("grant_types_supported", [])
        for grant in ("refresh_token", "client_credentials", "urn:ietf:params:oauth:grant-type:device_code"):
            if grant not in document["grant_types_supported"]:
                document["grant_types_supported"].append(grant)
        response.content = json.dumps(document).encode()
        response["Content-Length"] = str(len(response.content))
        return response


urlpatterns = [
    path("o/.well-known/openid-configuration", Discovery.as_view()),
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
]
