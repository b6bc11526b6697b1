"""Key rotation at the identity provider: a token signed with a new key (unknown kid) makes the gateway
fetch the JWKS again and accept it; tokens of the old key, still published as inactive, keep working.
Runs last (it restarts the session's identity provider with another active key)."""

from __future__ import annotations

import time

import grpc
from openshell._proto import openshell_pb2, openshell_pb2_grpc

from test_bearer_tokens import client_credentials_token


def test_new_signing_key_is_fetched_on_unknown_kid(idp, plaintext_gateway):
    ch = grpc.insecure_channel(f"127.0.0.1:{plaintext_gateway.port}")
    stub = openshell_pb2_grpc.OpenShellStub(ch)
    old = client_credentials_token(idp)
    stub.ListProviders(openshell_pb2.ListProvidersRequest(), metadata=[("authorization", f"Bearer {old}")], timeout=10)
    idp.stop()
    idp.start(idp.keys[1], inactive=[idp.keys[0]])
    time.sleep(11)  # the gateway fetches keys for an unknown kid at most every 10 s
    new = client_credentials_token(idp)
    stub.ListProviders(openshell_pb2.ListProvidersRequest(), metadata=[("authorization", f"Bearer {new}")], timeout=10)
    stub.ListProviders(openshell_pb2.ListProvidersRequest(), metadata=[("authorization", f"Bearer {old}")], timeout=10)
    ch.close()
