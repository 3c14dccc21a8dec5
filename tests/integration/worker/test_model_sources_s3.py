"""s3:// model sources: the cases tests/integration/test_model_sources.py leaves out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration


class TestModelSourcesS3:
    @pytest.fixture
    def s3c(self, stack: Any) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=stack.s3_endpoint, region_name="us-east-1",
                            aws_access_key_id=stack.s3_access_key,
                            aws_secret_access_key=stack.s3_secret_key,
                            config=Config(s3={"addressing_style": "path"}))

    def test_source_naming_one_object_resolves_to_that_file(
        self, s3c: Any, s3_bucket: str, tmp_path: Path
    ) -> None:
        from imagegen_worker.pipelines import s3, sources

        s3c.put_object(Bucket=s3_bucket, Key="loras/style.safetensors", Body=b"lora")
        s3c.put_object(Bucket=s3_bucket, Key="loras/other.safetensors", Body=b"other")
        src = sources.parse_source(f"s3://{s3_bucket}/loras/style.safetensors")
        weights = s3.fetch(src, tmp_path, s3=s3c)
        assert weights.path is not None and weights.path.name == "style.safetensors"
        assert weights.path.read_bytes() == b"lora" and weights.downloaded_files == 1
        again = s3.fetch(src, tmp_path, s3=s3c)
        assert again.path == weights.path and again.downloaded_files == 0

    def test_interrupted_download_leaves_nothing_that_looks_complete(
        self, s3c: Any, s3_bucket: str, tmp_path: Path
    ) -> None:
        from imagegen_worker.pipelines import s3, sources

        for name in "abc":
            s3c.put_object(Bucket=s3_bucket, Key=f"m/{name}", Body=name.encode())

        class CutAfterOne:  # the real client; the connection "drops" after one file
            def __init__(self) -> None:
                self.calls = 0

            def download_file(self, *args: Any, **kw: Any) -> None:
                self.calls += 1
                if self.calls > 1:
                    raise ConnectionResetError("connection dropped")
                s3c.download_file(*args, **kw)

            def __getattr__(self, name: str) -> Any:
                return getattr(s3c, name)

        src = sources.parse_source(f"s3://{s3_bucket}/m")
        with pytest.raises(ConnectionResetError):
            s3.fetch(src, tmp_path, s3=CutAfterOne())
        assert list((tmp_path / "s3" / s3_bucket / "m").iterdir()) == []
        done = s3.fetch(src, tmp_path, s3=s3c)
        assert done.downloaded_files == 3 and done.path is not None
        assert sorted(p.name for p in done.path.iterdir() if not p.name.startswith(".")) == [
            "a", "b", "c"]

    @pytest.fixture
    def weights(self, s3c: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> Any:
        """A bucket with a model folder and a LoRA file; s3.client() is the real client."""
        from imagegen_worker.pipelines import s3

        s3c.put_object(Bucket=s3_bucket, Key="sdxl/model_index.json", Body=b"{}")
        s3c.put_object(Bucket=s3_bucket, Key="sdxl/unet/diffusion_pytorch_model.safetensors",
                       Body=b"w" * 4096)
        s3c.put_object(Bucket=s3_bucket, Key="loras/style.safetensors", Body=b"lora")
        monkeypatch.setattr(s3, "client", lambda: s3c)
        return s3_bucket

    @staticmethod
    def marker(dest: Path, name: str) -> dict[str, Any]:
        return dict(json.loads((dest / ".imagegen-prefetch" / f"{name}.json").read_text()))

    def test_prefetch_downloads_an_s3_model_once_with_progress(
        self, weights: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        from imagegen_worker import prefetch
        from imagegen_worker.pipelines import sources

        src = f"s3://{weights}/sdxl"
        argv = ["prefetch", "--model", "sdxl", "--source", src, "--dest", str(tmp_path)]
        assert prefetch.main(argv) == 0
        out = capsys.readouterr().out
        assert f"[1/2] {src}/model_index.json" in out and "2 files downloaded" in out
        first = self.marker(tmp_path, "sdxl")
        assert first["revision"].startswith("s3:")
        assert Path(first["path"], "unet", "diffusion_pytorch_model.safetensors").is_file()
        assert sources.resolve(src, cache_dir=tmp_path).downloaded_files == 0
        assert prefetch.main(argv) == 0
        assert "0 files downloaded" in capsys.readouterr().out
        assert self.marker(tmp_path, "sdxl")["revision"] == first["revision"]

    def test_prefetch_model_config_brings_its_loras(self, weights: str, tmp_path: Path) -> None:
        from imagegen_worker import prefetch

        config = {
            "source": f"s3://{weights}/sdxl",
            "dtype": "float16",
            "loras": [{"name": "style", "source": f"s3://{weights}/loras/style.safetensors"}],
        }
        entry = json.dumps({"name": "sdxl-style", "spec": config})
        assert prefetch.main(["--model-config", entry, "--dest", str(tmp_path)]) == 0
        got = self.marker(tmp_path, "sdxl-style")
        assert set(got["loras"]) == {"style"}
        assert got["loras"]["style"]["revision"].startswith("s3:")
        config_file = tmp_path / "model.json"
        config_file.write_text(json.dumps(config))
        assert prefetch.main(["--model", "m", "--model-config", f"@{config_file}",
                              "--dest", str(tmp_path)]) == 0
        assert self.marker(tmp_path, "m")["revision"] == got["revision"]

