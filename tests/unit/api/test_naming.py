"""Names shared by operator, workers and clients: the contract of DESIGN.md."""

from imagegen_api import naming


def test_topics_and_group_follow_design() -> None:
    assert naming.tier_topic("ml", "sdxl", "turbo") == "imagegen.ml.sdxl.turbo"
    assert naming.results_topic("ml", "sdxl") == "imagegen.ml.sdxl.results"
    assert naming.dlq_topic("ml", "sdxl") == "imagegen.ml.sdxl.dlq"
    assert naming.consumer_group("ml", "sdxl") == "imagegen.ml.sdxl"
    assert naming.tier_of_topic("imagegen.ml.sdxl.relax") == "relax"


def test_redis_and_s3_keys_follow_design() -> None:
    assert naming.cache_key("ns", "p", "ab12") == "imagegen:cache:ns/p/ab12"
    assert naming.job_key("ns", "p", "req-1") == "imagegen:job:ns/p/req-1"
    # Pools (tenants) sharing one Redis never share a record or a cache entry.
    assert naming.job_key("ns", "a", "r") != naming.job_key("ns", "b", "r")
    assert naming.cache_key("x", "p", "d") != naming.cache_key("y", "p", "d")
    assert naming.workers_key("ml", "sdxl") == "imagegen:workers:ml/sdxl"
    assert naming.object_key("ml", "sdxl", "ab12", "png") == "ml/sdxl/ab12.png"


def test_child_names_and_selectors() -> None:
    assert naming.deployment_name("sdxl", naming.ROLE_WARM) == "sdxl-warm"
    assert naming.deployment_name("sdxl", naming.ROLE_COLD) == "sdxl-cold"
    assert naming.worker_selector("sdxl", "cold") == {
        naming.LABEL_POOL: "sdxl",
        naming.LABEL_ROLE: "cold",
    }
    assert naming.pool_labels("sdxl")[naming.LABEL_POOL] == "sdxl"
