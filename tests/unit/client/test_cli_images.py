"""`imagegen submit --init-image / --mask / --strength / --quality`: a local file goes inline
(base64, under the worker's limit), an s3:// key in the pool's bucket passes through, and each
mistake is refused naming the flag and the limit, for Kafka and for a gateway alike."""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

import pytest
from imagegen_api.messages import IMAGE_INPUT_MAX_BYTES, ImageInput
from imagegen_client import cli
from imagegen_client.gateway import request_body

from .test_cli import ns

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64  # the worker decodes; the CLI checks the signature
JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 64
WEBP = b"RIFF\x10\0\0\0WEBPVP8 " + b"\0" * 64


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("data", [PNG, JPEG, WEBP])
def test_a_local_file_is_sent_inline(tmp_path: Path, data: bytes) -> None:
    given = cli._image(write(tmp_path, "init", data))
    assert given.s3_key is None and given.b64 is not None
    assert base64.b64decode(given.b64) == data


def test_an_s3_url_passes_the_key_through() -> None:
    given = cli._image("s3://imagegen/ns/pool/inputs/cat.png")
    assert given == ImageInput(s3_key="ns/pool/inputs/cat.png")


@pytest.mark.parametrize(("text", "words"), [
    ("s3://bucket-only", "s3://BUCKET/KEY"),
    ("s3:///key", "s3://BUCKET/KEY"),
    ("/no/such/file.png", "cannot read"),
])
def test_bad_sources_are_refused(text: str, words: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as err:
        cli._image(text)
    assert words in str(err.value)


def test_a_file_over_the_limit_is_refused_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path, "big.png", PNG + b"\0" * IMAGE_INPUT_MAX_BYTES)
    with pytest.raises(argparse.ArgumentTypeError) as err:
        cli._image(path)
    assert f"over the limit of {IMAGE_INPUT_MAX_BYTES} bytes" in str(err.value)
    assert "s3://" in str(err.value)
    # Exactly at the limit is fine.
    at = write(tmp_path, "at.png", PNG + b"\0" * (IMAGE_INPUT_MAX_BYTES - len(PNG)))
    assert cli.inline_bytes(cli._image(at)) == IMAGE_INPUT_MAX_BYTES


def test_a_file_that_is_no_image_is_refused(tmp_path: Path) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a PNG, JPEG or WebP"):
        cli._image(write(tmp_path, "notes.txt", b"GIF89a hello"))


def test_flags_become_the_requests_fields(tmp_path: Path) -> None:
    init = cli._image(write(tmp_path, "init.png", PNG))
    mask = cli._image("s3://b/default/p/inputs/mask.png")
    reqs = cli.build_requests(ns(count=2, init_image=init, mask=mask, strength=0.6,
                                 format="jpeg", quality=70))
    for r in reqs:
        assert (r.init_image, r.mask, r.strength) == (init, mask, 0.6)
        assert (r.output_format, r.quality) == ("jpeg", 70)
    [plain] = cli.build_requests(ns(prompts=["a fox"]))
    assert (plain.init_image, plain.mask, plain.strength, plain.quality) == (None,) * 4


def test_the_gateway_body_carries_them(tmp_path: Path) -> None:
    init = cli._image(write(tmp_path, "init.png", PNG))
    [r] = cli.build_requests(ns(prompts=["a fox"], init_image=init,
                                mask=ImageInput(s3_key="ns/p/m.png"), strength=0.5,
                                format="webp", quality=80))
    body = request_body(r)
    assert body["init_image"] == {"b64": init.b64}
    assert body["mask"] == {"s3_key": "ns/p/m.png"}
    assert (body["strength"], body["output_format"], body["output_compression"]) == (
        0.5, "webp", 80)
    [png] = cli.build_requests(ns(prompts=["a fox"], quality=80))
    assert "output_compression" not in request_body(png)  # png: the gateway would refuse it
    assert "init_image" not in request_body(png) and "strength" not in request_body(png)


@pytest.mark.parametrize(("args", "needle"), [
    (["--mask", "s3://b/ns/p/m.png"], "--mask needs --init-image"),
    (["--strength", "0.5"], "--strength needs --init-image"),
    (["--init-image", "s3://b/ns/p/i.png", "--strength", "0"], "strength 0 is outside (0, 1]"),
    (["--init-image", "s3://b/ns/p/i.png", "--strength", "1.5"], "outside (0, 1]"),
    (["--init-image", "s3://b/other/p/i.png"], "not below the pool's prefix 'ns/p/'"),
    (["--quality", "0"], "quality 0 is outside 1..100"),
])
def test_mistakes_exit_2_naming_the_flag(args: list[str], needle: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["submit", "--pool", "p", "-n", "ns", *args, "a fox"])
    assert exit_info.value.code == 2
    assert needle in capsys.readouterr().err


def test_init_image_and_mask_inline_together_must_fit_one_message(tmp_path: Path) -> None:
    half = PNG + b"\0" * (IMAGE_INPUT_MAX_BYTES // 2 + 100)
    args = ns(init_image=cli._image(write(tmp_path, "a.png", half)),
              mask=cli._image(write(tmp_path, "b.png", half)), strength=None, pool="p",
              namespace="ns")
    problem = cli.check_images(args)
    assert problem is not None and f"limit of {IMAGE_INPUT_MAX_BYTES} bytes" in problem
    args.mask = ImageInput(s3_key="ns/p/m.png")
    assert cli.check_images(args) is None


def test_through_a_gateway_the_key_is_left_to_the_worker() -> None:
    # No --pool with --gateway: the prefix is not known here, the worker checks it.
    args = ns(init_image=ImageInput(s3_key="elsewhere/x.png"), mask=None, strength=None,
              pool=None, namespace="default")
    assert cli.check_images(args) is None
