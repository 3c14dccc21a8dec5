"""Content Credentials: every encoded image carries a C2PA manifest signed with the pool's key,
which the C2PA reader validates; a key that cannot sign is refused at load, naming the file."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from imagegen_worker import encode
from imagegen_worker.content_credentials import (
    TRAINED_ALGORITHMIC_MEDIA,
    ContentCredentials,
    ContentCredentialsError,
    read_manifest,
)
from PIL import Image

from dev.localstack import signing

PARAMS = {"prompt": "a red circle", "width": 64, "height": 64, "steps": 4, "guidance": 5.0,
          "sampler": "euler", "seed": 7, "model": "tiny", "model_revision": "abc",
          "negative_prompt": None}


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> ContentCredentials:
    return ContentCredentials.load(signing.make_chain().write(tmp_path_factory.mktemp("cc")))


def image() -> Image.Image:
    return Image.new("RGB", (64, 64), (200, 20, 20))


@pytest.mark.parametrize("fmt", ["png", "webp", "jpeg"])
def test_signed_images_carry_a_valid_manifest_with_the_parameters(
        credentials: ContentCredentials, fmt: str) -> None:
    enc = encode.encode(image(), fmt, PARAMS, credentials=credentials)
    manifest, state = read_manifest(enc.data, enc.content_type)
    assert state == "Valid", state
    assert manifest is not None
    (action,) = manifest["assertions"][0]["data"]["actions"]
    assert action["action"] == "c2pa.created"
    assert action["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert action["parameters"]["seed"] == 7 and action["parameters"]["model"] == "tiny"
    assert "negative_prompt" not in action["parameters"]  # None values are left out
    # The embedded metadata is still there, and the pixels still decode.
    assert encode.read_parameters(enc.data)["seed"] == 7
    with Image.open(io.BytesIO(enc.data)) as back:
        assert back.size == (64, 64)


def test_unsigned_images_have_no_manifest() -> None:
    enc = encode.encode(image(), "png", PARAMS)
    assert read_manifest(enc.data, enc.content_type) == (None, None)


def test_changed_pixels_break_the_signature(credentials: ContentCredentials) -> None:
    data = bytearray(encode.encode(image(), "png", PARAMS, credentials=credentials).data)
    # Re-encode other pixels and carry the signed chunk over: the hash binding must fail.
    other = io.BytesIO()
    Image.new("RGB", (64, 64), (20, 200, 20)).save(other, "PNG")
    idat = data.find(b"IDAT")
    other_idat = other.getvalue().find(b"IDAT")
    length = int.from_bytes(data[idat - 4:idat], "big")
    other_len = int.from_bytes(other.getvalue()[other_idat - 4:other_idat], "big")
    tampered = (bytes(data[:idat - 4]) + other.getvalue()[other_idat - 4:other_idat + 8 + other_len]
                + bytes(data[idat + 8 + length:]))
    manifest, state = read_manifest(tampered, "image/png")
    assert manifest is not None and state == "Invalid", state


@pytest.mark.parametrize("key", ["ec-p384", "ed25519"])
def test_the_algorithm_follows_the_key(tmp_path: Path, key: str) -> None:
    creds = ContentCredentials.load(signing.make_chain(key=key).write(tmp_path))
    assert creds.algorithm == {"ec-p384": "ES384", "ed25519": "ED25519"}[key]
    enc = encode.encode(image(), "webp", PARAMS, credentials=creds)
    assert read_manifest(enc.data, enc.content_type)[1] == "Valid"


def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    signing.make_chain().write(tmp_path)
    (tmp_path / "tls.key").unlink()
    with pytest.raises(ContentCredentialsError, match=r"tls\.key.*must hold tls\.crt and tls\.key"):
        ContentCredentials.load(tmp_path)


def test_a_key_of_another_certificate_is_refused(tmp_path: Path) -> None:
    chain = signing.make_chain()
    chain.write(tmp_path)
    (tmp_path / "tls.key").write_bytes(signing.make_chain().key_pem)
    with pytest.raises(ContentCredentialsError, match="does not match the first certificate"):
        ContentCredentials.load(tmp_path)


def test_garbage_is_refused_naming_the_file(tmp_path: Path) -> None:
    signing.make_chain().write(tmp_path)
    (tmp_path / "tls.crt").write_text("not a certificate")
    with pytest.raises(ContentCredentialsError, match=r"tls\.crt: not a PEM certificate chain"):
        ContentCredentials.load(tmp_path)
