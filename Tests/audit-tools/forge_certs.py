#!/usr/bin/env python3
"""Client certificates an attacker can make: a CA of its own and leaves claiming any subject (issue 12,
handshake-refusal audit tests). Uses python3-cryptography (Debian; scripts/setup.sh installs it).

    forge_certs.py DIR COUNT [--evil]

Writes DIR/ca.crt, and COUNT leaves DIR/forged-<i>.crt/.key with subject O=openshell, OU=operator,
CN=forged-<i> (all distinct). With --evil, first a leaf DIR/evil.crt/.key whose CN holds a newline, an ANSI
escape and a bidi override followed by 10,240 bytes ('A'). Prints the list file DIR/certs.txt: one
"CERT KEY" line per leaf, the evil one first.
"""
import argparse
import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

EVIL_CN = "evil\nline\x1b[31m\u202e" + "A" * 10240


def write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("count", type=int)
    ap.add_argument("--evil", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "foreign-ca")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    write(os.path.join(args.dir, "ca.crt"), ca.public_bytes(serialization.Encoding.PEM))
    names = (["evil"] if args.evil else []) + [f"forged-{i}" for i in range(args.count)]
    lines = []
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        cn = EVIL_CN if name == "evil" else name
        subject = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "openshell"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "operator"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn, _validate=False),  # longer than X.520's 64
        ])
        cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        c, k = os.path.join(args.dir, name + ".crt"), os.path.join(args.dir, name + ".key")
        write(c, cert.public_bytes(serialization.Encoding.PEM))
        write(k, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        lines.append(f"{c} {k}\n")
    with open(os.path.join(args.dir, "certs.txt"), "w") as f:
        f.writelines(lines)
    print(os.path.join(args.dir, "certs.txt"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
