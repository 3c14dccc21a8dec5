"""The pool's S3 expiration rule merged into a bucket's shared lifecycle configuration."""

from __future__ import annotations

import pytest
from imagegen_api.specs import GenerationPoolSpec
from imagegen_worker import lifecycle
from pydantic import ValidationError

RID = lifecycle.rule_id("team", "p1")
OURS = lifecycle.rule("team", "p1", "team/p1/", 7)
OTHER = {"ID": "imagegen:team/p2", "Status": "Enabled", "Filter": {"Prefix": "team/p2/"},
         "Expiration": {"Days": 30}}


@pytest.mark.parametrize(("existing", "wanted", "expect"), [
    ([], OURS, [OURS]),  # first rule of the bucket
    ([OTHER], OURS, [OTHER, OURS]),  # another pool's rule kept
    ([OTHER, OURS], OURS, None),  # already there: no write
    # the server's shape with extra fields means the same rule: no write
    ([{**OURS, "Filter": {"Prefix": "team/p1/"}, "Expiration": {"Days": 7},
       "NoncurrentVersionExpiration": {}}], OURS, None),
    ([OTHER, lifecycle.rule("team", "p1", "team/p1/", 30)], OURS, [OTHER, OURS]),  # days changed
    ([OTHER, OURS], None, [OTHER]),  # retentionDays removed: our rule goes, others stay
    ([OURS], None, []),  # the last rule: the configuration is deleted
    ([OTHER], None, None),  # nothing of ours: no write
])
def test_plan_touches_only_the_pools_own_rule(existing: list[lifecycle.Rule],
                                              wanted: lifecycle.Rule | None,
                                              expect: list[lifecycle.Rule] | None) -> None:
    assert lifecycle.plan(existing, wanted, RID) == expect


def test_rule_expires_the_pools_prefix() -> None:
    assert OURS == {"ID": "imagegen:team/p1", "Status": "Enabled",
                    "Filter": {"Prefix": "team/p1/"}, "Expiration": {"Days": 7}}


@pytest.mark.parametrize("days", [0, -1, 3651])
def test_retention_days_is_bounded(days: int) -> None:
    with pytest.raises(ValidationError, match="retentionDays"):
        GenerationPoolSpec.model_validate({"models": ["m"], "storage": {"retentionDays": days}})

