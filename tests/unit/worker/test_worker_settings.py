"""Settings from the environment, endpoint resolution into the config, fault hook parsing."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from imagegen_api.workerconfig import CacheSettings, StorageSettings
from imagegen_worker.faults import Faults, InjectedFault
from imagegen_worker.settings import Settings

ENV = {
    "IMAGEGEN_WORKER_CONFIG": "/cfg/worker.json",
    "IMAGEGEN_HTTP_PORT": "9123",
    "POD_NAME": "tiny-warm-abc",
    "POD_NAMESPACE": "team-a",
    "IMAGEGEN_ROLE": "warm",
    "IMAGEGEN_KAFKA_BOOTSTRAP": "k:9092",
    "IMAGEGEN_REDIS_URL": "redis://r:6379/0",
    "IMAGEGEN_S3_ENDPOINT": "http://s3:9000",
    "IMAGEGEN_MODEL_CACHE": "/models",
    "IMAGEGEN_DEVICE": "cpu",
    "IMAGEGEN_LOG_LEVEL": "debug",
}


def test_every_field_comes_from_its_variable() -> None:
    s = Settings.from_env(ENV)
    assert s == Settings(
        config_path=Path("/cfg/worker.json"), http_port=9123, pod_name="tiny-warm-abc",
        pod_namespace="team-a", role="warm", kafka_bootstrap="k:9092",
        redis_url="redis://r:6379/0", s3_endpoint="http://s3:9000", model_cache="/models",
        device="cpu", log_level="DEBUG", fault_inject="",
    )


def test_defaults_match_the_pod_contract() -> None:
    s = Settings.from_env({})
    assert s.config_path == Path("/etc/imagegen/worker.json")
    assert s.http_port == 8080
    assert s.pod_name  # the host name
    assert (s.role, s.kafka_bootstrap, s.redis_url, s.device) == (None, None, None, None)
    assert s.log_level == "INFO"


@pytest.mark.parametrize("port", ["http", "70000"])
def test_bad_port_is_refused(port: str) -> None:
    with pytest.raises(ValueError, match="IMAGEGEN_HTTP_PORT"):
        Settings.from_env({"IMAGEGEN_HTTP_PORT": port})


def test_env_fills_only_what_the_config_leaves_unset(config_factory: Any) -> None:
    s = Settings.from_env(ENV)
    cfg = config_factory()
    cfg = cfg.model_copy(update={"kafka": cfg.kafka.model_copy(
        update={"bootstrap_servers": None})})
    resolved = s.resolve(cfg)
    assert resolved.kafka.bootstrap_servers == "k:9092"
    assert resolved.cache.redis_url == "redis://r:6379/0"
    assert resolved.storage.endpoint == "http://s3:9000"

    explicit = config_factory(cache=CacheSettings(redis_url="redis://cfg"),
                              storage=StorageSettings(endpoint="http://cfg-s3"))
    resolved = s.resolve(explicit)
    assert resolved.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert resolved.cache.redis_url == "redis://cfg"
    assert resolved.storage.endpoint == "http://cfg-s3"


def test_missing_endpoints_fail_clearly(config_factory: Any) -> None:
    cfg = config_factory()
    with pytest.raises(ValueError, match="IMAGEGEN_REDIS_URL"):
        Settings.from_env({}).resolve(cfg)
    no_kafka = cfg.model_copy(update={"kafka": cfg.kafka.model_copy(
        update={"bootstrap_servers": None})})
    with pytest.raises(ValueError, match="IMAGEGEN_KAFKA_BOOTSTRAP"):
        Settings.from_env({"IMAGEGEN_REDIS_URL": "redis://x"}).resolve(no_kafka)


def test_config_file_is_loaded_and_resolved(config_factory: Any, tmp_path: Path) -> None:
    path = tmp_path / "worker.json"
    path.write_text(config_factory().dump_json())
    s = Settings.from_env({**ENV, "IMAGEGEN_WORKER_CONFIG": str(path)})
    cfg = s.load_config()
    assert cfg.pool == "tiny" and cfg.cache.redis_url == "redis://r:6379/0"


def test_fault_hooks_parse_and_fire() -> None:
    assert not Faults.parse("").active
    f = Faults.parse("fail_prompt=POISON;delay_generate=1.5")
    assert f == Faults(fail_prompt="POISON", delay_generate=1.5) and f.active
    f.check_prompts(["fine"])
    with pytest.raises(InjectedFault):
        f.check_prompts(["fine", "a POISON pill"])
    with pytest.raises(ValueError, match="unknown fault hook"):
        Faults.parse("explode=1")


def test_kill_prompt_hook_sigkills_its_own_process() -> None:
    f = Faults.parse("kill_prompt=KILLME")
    assert f == Faults(kill_prompt="KILLME") and f.active
    f.check_prompts(["fine"])  # other batches live on (this process too)
    code = ("from imagegen_worker.faults import Faults\n"
            "Faults.parse('kill_prompt=KILLME').check_prompts(['ok', 'KILLME please'])\n"
            "print('survived')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == -signal.SIGKILL and "survived" not in done.stdout
