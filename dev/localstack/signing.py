"""A throwaway C2PA signing chain for the demo, tests and benchmarks: a CA and a signing
certificate under it (C2PA readers refuse a self-signed signing certificate), written as the
kubernetes.io/tls Secret keys the worker expects (tls.crt: signer then CA; tls.key).

Production pools use a key from their PKI (cert-manager `Certificate` with the
emailProtection or documentSigning extended key usage); see docs/generation.md.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ORGANIZATION = "imagegen-operator local stack"


@dataclass(frozen=True)
class SigningChain:
    cert_pem: bytes  # signing certificate, then the CA
    key_pem: bytes  # the signing certificate's key, PKCS#8
    ca_pem: bytes

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "tls.crt").write_bytes(self.cert_pem)
        (directory / "tls.key").write_bytes(self.key_pem)
        return directory

    def secret_data(self) -> dict[str, str]:
        """The Secret's stringData."""
        return {"tls.crt": self.cert_pem.decode(), "tls.key": self.key_pem.decode()}


def make_chain(common_name: str = "imagegen demo signer", *, key: str = "ec-p256",
               days: int = 365) -> SigningChain:
    """key: ec-p256 | ec-p384 | ed25519 (the signing certificate's key; the CA is P-256)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("imagegen demo CA")
    ca = (_builder(ca_name, ca_name, ca_key.public_key(), now, days)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(_usage(cert_sign=True), critical=True)
          .sign(ca_key, hashes.SHA256()))
    signer_key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey = (
        ed25519.Ed25519PrivateKey.generate() if key == "ed25519"
        else ec.generate_private_key(ec.SECP384R1() if key == "ec-p384" else ec.SECP256R1()))
    cert = (_builder(_name(common_name), ca_name, signer_key.public_key(), now, days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return SigningChain(
        cert_pem=cert.public_bytes(pem) + ca.public_bytes(pem),
        key_pem=signer_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()),
        ca_pem=ca.public_bytes(pem),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)])


def _builder(subject: x509.Name, issuer: x509.Name, public_key: object,
             now: datetime.datetime, days: int) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=days)))


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not cert_sign, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=cert_sign, crl_sign=cert_sign, encipher_only=False,
                         decipher_only=False)
