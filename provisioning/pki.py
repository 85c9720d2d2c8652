"""The county's small certificate authority: its key, the broker's certificate, each page's certificate.

One CA per county workspace. It signs the broker's server certificate (named for the broker
host, so devices check who they talk to) and every device's config-page certificate (named for
``<device-id>.local`` and the hall's fixed address, so a browser that trusts the county CA
accepts the page). Devices authenticate to the broker with a password, not a certificate: one
secret to rotate, and Mosquitto's ACLs key on the username anyway.

EC P-256 keys throughout: small, fast on a Pi, and accepted by OpenSSL (Mosquitto), Python's
``ssl`` (paho, cheroot) and every current browser.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# A Pi has no battery-backed clock: until NTP answers it believes the time it last saved, or
# its image's build date on a first boot, which may be months old. Certificates valid "from
# now" would be refused until the clock is right, so every certificate is valid from a fixed
# date in the past. Back-dating costs nothing here: this CA signs only what county IT asks.
NOT_BEFORE = datetime(2020, 1, 1, tzinfo=timezone.utc)
CA_DAYS = 30 * 365
# The broker's certificate is trusted through the CA by our own clients only; a long life
# keeps 200 halls from dropping off at once on the day it would expire.
BROKER_DAYS = 10 * 365
# Apple's platforms refuse TLS server certificates valid for more than 825 days, even from a
# private CA; re-bundling a device renews its page certificate.
WEB_DAYS = 825


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, PEM-encoded."""

    cert_pem: bytes
    key_pem: bytes


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # Unencrypted: Mosquitto and cheroot read the key unattended at start. The files are 0600.
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _not_after(days: int) -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=days)


def make_ca(county: str) -> Issued:
    """A new self-signed CA for ``county``."""
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"hall appliances {county}"), x509.NameAttribute(NameOID.COMMON_NAME, f"{county} hall appliance CA")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(_not_after(CA_DAYS))
        # path_length 0: it signs end-entity certificates only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def subject_alt_names(dns: list[str], ips: list[str]) -> x509.SubjectAlternativeName:
    """The SAN extension for these names and addresses."""
    entries: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    entries += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    return x509.SubjectAlternativeName(entries)


def host_names(host: str) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) that name ``host``: an address goes in as an IP SAN, a name as DNS."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return [host], []
    return [], [host]


def issue_server_cert(ca: Issued, common_name: str, dns: list[str], ips: list[str], days: int) -> Issued:
    """A TLS server certificate signed by ``ca`` for these names (hostname checks read only the SAN)."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    key = _new_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(min(_not_after(days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(subject_alt_names(dns, ips), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)  # type: ignore[arg-type]
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def fingerprint(cert_pem: bytes) -> str:
    """The certificate's SHA-256 fingerprint as browsers show it (AB:CD:…)."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def not_after(cert_pem: bytes) -> datetime:
    """When the certificate expires."""
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc
