"""Access tokens as JWTs (RFC 9068 profile) signed with the provider's active OIDC key.

django-oauth-toolkit calls this for every access token it issues (ACCESS_TOKEN_GENERATOR); oauthlib has
set request.expires_in before. The kid is the key's RFC 7638 thumbprint, as in the provider's JWKS.
"""

import json
import os
import time
import uuid

from jwcrypto import jwk, jwt
from oauth2_provider.settings import oauth2_settings


def signed_access_token(request, refresh_token=False):
    key = jwk.JWK.from_pem(oauth2_settings.OIDC_RSA_PRIVATE_KEY.encode("utf-8"))
    now = int(time.time())
    user = getattr(request, "user", None)
    if request.grant_type == "client_credentials" or user is None:
        subject = f"client:{request.client_id}"
    else:
        subject = user.get_username()
    claims = {
        "iss": os.environ["IDP_ISSUER"],
        "sub": subject,
        "aud": os.environ["IDP_AUDIENCE"],
        "iat": now,
        "nbf": now,
        "exp": now + int(request.expires_in),
        "jti": str(uuid.uuid4()),
        "client_id": request.client_id,
        "scope": " ".join(request.scopes or []),
    }
    token = jwt.JWT(header={"alg": "RS256", "typ": "at+jwt", "kid": key.thumbprint()}, claims=json.dumps(claims))
    token.make_signed_token(key)
    return token.serialize()
