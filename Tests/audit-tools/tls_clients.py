#!/usr/bin/env python3
"""TLS clients against the gateway's port, for the handshake-refusal audit tests (issue 12).

    tls_clients.py MODE HOST PORT COUNT --ca CA.crt [--cert C.crt --key C.key] [--cert-list FILE]
                   [--sources IP,IP,...]

MODE:
  handshake   full TLS handshakes (client certificate if --cert), then one read: the gateway's verdict
              arrives as a TLS alert (TLS 1.3 sends it after the client's Finished)
  tcp-close   connect and close, no byte sent (a TCP health probe)
  hello-close send a ClientHello, then close without an alert (a client giving up mid-handshake)
  plaintext-grpc  the HTTP/2 client preface in plaintext

--cert-list: a file of "CERT KEY" lines; connection i presents the certificate of line i mod the number of
lines (a client forging a new subject per handshake). --sources: local addresses to connect from, round-robin
(127.0.0.2, 127.0.0.3, ... are loopback addresses too on Linux).

Prints one JSON object: outcome -> number of connections (e.g. {"TLSV13_ALERT_CERTIFICATE_REQUIRED": 1000}).
"""
import argparse
import collections
import json
import socket
import ssl


def outcome(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason
    return type(exc).__name__


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode")
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("count", type=int)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--cert-list")
    ap.add_argument("--sources", default="")
    args = ap.parse_args()

    def context(cert, key):
        ctx = ssl.create_default_context(cafile=args.ca)
        ctx.check_hostname = False  # the CA is verified; the gateway's names are not the point here
        ctx.set_alpn_protocols(["h2"])
        if cert:
            ctx.load_cert_chain(cert, key)
        return ctx

    if args.cert_list:
        with open(args.cert_list) as f:
            contexts = [context(*line.split()) for line in f if line.strip()]
    else:
        contexts = [context(args.cert, args.key)]
    sources = [s for s in args.sources.split(",") if s]
    counts = collections.Counter()
    for i in range(args.count):
        ctx = contexts[i % len(contexts)]
        source = (sources[i % len(sources)], 0) if sources else None
        sock = socket.create_connection((args.host, args.port), timeout=10, source_address=source)
        try:
            if args.mode == "tcp-close":
                counts["closed"] += 1
            elif args.mode == "plaintext-grpc":
                sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                counts["closed" if sock.recv(100) == b"" else "answered"] += 1
            elif args.mode == "hello-close":
                # The ClientHello from an in-memory TLS object, so the client can never get further.
                incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
                try:
                    ctx.wrap_bio(incoming, outgoing).do_handshake()
                except ssl.SSLWantReadError:
                    pass
                sock.sendall(outgoing.read())
                counts["hello sent"] += 1
            else:
                tls = ctx.wrap_socket(sock)
                sock = tls
                try:
                    data = tls.recv(1)
                    counts["eof" if data == b"" else "data"] += 1
                except (ssl.SSLError, OSError) as e:
                    counts[outcome(e)] += 1
        except (ssl.SSLError, OSError) as e:
            counts[outcome(e)] += 1
        finally:
            sock.close()  # SSLSocket.close sends no close_notify: an abrupt end, like a client giving up
    print(json.dumps(dict(counts), sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
