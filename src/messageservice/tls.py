"""A self-signed certificate for local https, for clients that speak nothing else (b24pysdk)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from messageservice.core.secrets import write_private


def ensure_certificate(folder: Path, extra_names: list[str] | None = None) -> tuple[Path, Path]:
    """Create folder/cert.pem and key.pem once (valid for localhost, 127.0.0.1, ::1 and extra names)."""
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    for name in extra_names or []:
        host = name.split(":")[0]
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    unique = list(dict.fromkeys(names))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "messageservice local portal")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(unique), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    write_private(
        key_path,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def trust_instructions(cert_path: Path) -> str:
    return (
        f"Self-signed certificate: {cert_path}\n"
        f"  Python requests / b24pysdk:  export REQUESTS_CA_BUNDLE={cert_path}\n"
        f"  aiohttp, OpenSSL tools:      export SSL_CERT_FILE={cert_path}\n"
        f"  Node.js:                     export NODE_EXTRA_CA_CERTS={cert_path}\n"
        f"  Whole machine (Debian):      cp {cert_path} /usr/local/share/ca-certificates/messageservice.crt"
        " && update-ca-certificates"
    )
