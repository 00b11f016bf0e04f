"""Measure certificate signing on one core: cryptography alone, then sshca's signer.

The first figure is the ceiling (SSHCertificateBuilder.sign with an Ed25519
CA key); the second is ca.certs.sign_certificate, which checks the spec
before signing. The difference is what sshca's checks cost.

Usage: .venv/bin/python bench/sign_bench.py [--seconds 3] [--ca-type ed25519]
"""

import argparse
import time
from datetime import datetime, timedelta, timezone

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ca.certs import CertificateSpec, sign_certificate
from ca.keys import CAKey, generate_ca_key
from ca.userkeys import parse_user_key


def rate(function, seconds):
    """Call ``function`` repeatedly for about ``seconds``; return calls per second."""
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(100):
            function(count)
            count += 1
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - started)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement, in seconds")
    parser.add_argument("--ca-type", default="ed25519", help="CA key type, e.g. ed25519, ecdsa-p256, rsa")
    args = parser.parse_args()

    private = generate_ca_key(args.ca_type)
    ca = CAKey.from_private_key(private)
    user_private = ed25519.Ed25519PrivateKey.generate()
    user_line = user_private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    user_key = parse_user_key(user_line)
    now = datetime.now(timezone.utc).replace(microsecond=0)

    def raw(serial):
        (
            serialization.SSHCertificateBuilder()
            .public_key(user_key.public_key)
            .serial(serial + 1)
            .type(serialization.SSHCertificateType.USER)
            .key_id(b"user=alice request=1 serial=1")
            .valid_principals([b"root@db1"])
            .valid_after(int(now.timestamp()))
            .valid_before(int((now + timedelta(hours=1)).timestamp()))
            .add_extension(b"permit-pty", b"")
            .sign(private)
        )

    def checked(serial):
        spec = CertificateSpec(
            public_key=user_key,
            serial=serial + 1,
            key_id=f"user=alice request=1 serial={serial + 1}",
            principals=("root@db1",),
            valid_after=now,
            valid_before=now + timedelta(hours=1),
        )
        sign_certificate(ca, spec, max_validity=timedelta(hours=8))

    print(f"CA key: {args.ca_type}; {args.seconds:.0f} s per figure, one thread")
    print(f"cryptography SSHCertificateBuilder.sign: {rate(raw, args.seconds):8.0f} certificates/s")
    print(f"ca.certs.sign_certificate (checks + sign): {rate(checked, args.seconds):8.0f} certificates/s")


if __name__ == "__main__":
    main()
