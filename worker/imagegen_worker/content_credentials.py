"""Content Credentials: a C2PA manifest, signed with the pool's key, in every image.

The pool names a Secret (`spec.output.contentCredentials.secretName`) of type
kubernetes.io/tls — what cert-manager issues: `tls.crt` the certificate chain in PEM, the
signing certificate first, `tls.key` its private key. The operator mounts it read-only at
`naming.CONTENT_CREDENTIALS_DIR`. The worker loads it once at start (a missing or unreadable
key stops the worker with the reason, as a model that cannot load does) and signs each encoded
image after the watermark and the metadata: the manifest says the image was created by a
trained model (IPTC digital source type "trainedAlgorithmicMedia", as the EU AI Act's labelling
guidance and the C2PA AI spec ask) and carries the generation parameters.

Signing uses the Content Authenticity Initiative's own library (c2pa-python, bindings of
c2pa-rs): the manifest is embedded (PNG caBX chunk, WebP/JPEG JUMBF), so readers such as
`c2patool` or contentcredentials.org verify the image alone. The algorithm follows the key:
EC P-256/P-384/P-521 → ES256/ES384/ES512, Ed25519 → Ed25519, RSA → PS256.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import c2pa
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_private_key,
)
from cryptography.x509 import load_pem_x509_certificates

CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
CLAIM_GENERATOR = "imagegen-operator"
# IPTC's term for media made by a trained model (C2PA's list of digital source types).
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
_EC_ALGS = {"secp256r1": c2pa.C2paSigningAlg.ES256, "secp384r1": c2pa.C2paSigningAlg.ES384,
            "secp521r1": c2pa.C2paSigningAlg.ES512}


class ContentCredentialsError(ValueError):
    """The Secret's key or certificates cannot sign: the message names the file and the why."""


@dataclass
class ContentCredentials:
    """A loaded signer; `sign` is safe to call from the encode threads (one at a time)."""

    algorithm: str
    subject: str  # the signing certificate's subject, for logs and heartbeats
    _signer: Any
    _context: Any
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load(cls, directory: Path) -> ContentCredentials:
        cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
        chain_pem = _read(cert_path)
        key_pem = _read(key_path)
        try:
            chain = load_pem_x509_certificates(chain_pem)
        except ValueError as exc:
            raise ContentCredentialsError(f"{cert_path}: not a PEM certificate chain: {exc}") \
                from exc
        try:
            key = load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ContentCredentialsError(
                f"{key_path}: not an unencrypted PEM private key: {exc}") from exc
        if _spki(chain[0].public_key()) != _spki(key.public_key()):
            raise ContentCredentialsError(
                f"{key_path} does not match the first certificate of {cert_path} (the signing "
                "certificate must come first, then its issuers)")
        alg = _algorithm(key, key_path)
        try:
            signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(alg, chain_pem, key_pem, None))
        except c2pa.C2paError as exc:
            raise ContentCredentialsError(f"{directory}: c2pa refused the key: {exc}") from exc
        # No thumbnail in the manifest: the SDK's default embeds one, which grows a WebP of
        # ~30 KB by ~900 KB (docs/benchmarks.md); the signed image is its own best preview.
        context = c2pa.Context(settings=c2pa.Settings.from_dict(
            {"builder": {"thumbnail": {"enabled": False}}}))
        return cls(algorithm=alg.name, subject=chain[0].subject.rfc4514_string(),
                   _signer=signer, _context=context)

    def sign(self, data: bytes, content_type: str, params: dict[str, Any]) -> bytes:
        """`data` with a signed manifest embedded: created by a trained model, with `params`."""
        manifest = {
            "claim_generator_info": [{"name": CLAIM_GENERATOR}],
            "format": content_type,
            "assertions": [{"label": "c2pa.actions", "data": {"actions": [{
                "action": "c2pa.created",
                "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                "softwareAgent": {"name": CLAIM_GENERATOR},
                "parameters": {k: v for k, v in params.items() if v is not None},
            }]}}],
        }
        out = io.BytesIO()
        with self._lock, c2pa.Builder(manifest, context=self._context) as builder:
            builder.sign(self._signer, content_type, io.BytesIO(data), out)
        return out.getvalue()


def read_manifest(data: bytes, content_type: str) -> tuple[dict[str, Any] | None, str | None]:
    """The active manifest of signed bytes and the validation state ("Valid", "Invalid", …);
    (None, None) when there is none. For tests and tools."""
    try:
        with c2pa.Reader(content_type, io.BytesIO(data)) as reader:
            return reader.get_active_manifest(), reader.get_validation_state()
    except c2pa.C2paError.ManifestNotFound:
        return None, None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ContentCredentialsError(
            f"cannot read {path} (the contentCredentials Secret must hold {CERT_FILE} and "
            f"{KEY_FILE}): {exc.strerror or exc}") from exc


def _spki(public_key: Any) -> bytes:
    return bytes(public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))


def _algorithm(key: object, key_path: Path) -> c2pa.C2paSigningAlg:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        alg = _EC_ALGS.get(key.curve.name)
        if alg is None:
            raise ContentCredentialsError(
                f"{key_path}: EC curve {key.curve.name} is not one C2PA signs with "
                f"(allowed: {', '.join(sorted(_EC_ALGS))})")
        return alg
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return c2pa.C2paSigningAlg.ED25519
    if isinstance(key, rsa.RSAPrivateKey):
        return c2pa.C2paSigningAlg.PS256
    raise ContentCredentialsError(
        f"{key_path}: {type(key).__name__} keys cannot sign C2PA manifests "
        "(allowed: EC P-256/P-384/P-521, Ed25519, RSA)")
