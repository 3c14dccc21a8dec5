"""Safety after generation: the spec's checker field (validation, the generated CRD), the
decision on a request's verdicts and its blocked error, and the checkers scoring real pixels —
the builtin redness classifier and a diffusers StableDiffusionSafetyChecker built in code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from imagegen_api.specs import (
    CHECKER_SOURCE_PATTERN,
    SOURCE_PATTERN,
    GenerationPoolSpec,
    SafetyCheckerSpec,
    SafetySpec,
)
from imagegen_worker.pipelines import safety_models
from imagegen_worker.safety import SafetyChecker, Verdict, blocked_error, decide, flagged_count
from PIL import Image
from pydantic import ValidationError

REPO = Path(__file__).resolve().parents[3]


def solid(rgb: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> Image.Image:
    return Image.new("RGB", size, rgb)


# --- spec --------------------------------------------------------------------------------------


class TestSpec:
    def test_defaults_and_a_builtin_checker(self) -> None:
        assert SafetySpec().checker is None
        spec = SafetySpec.model_validate({"checker": {"source": "builtin://redness"}})
        assert spec.checker is not None and spec.checker.threshold == 0.5

    @pytest.mark.parametrize("threshold", [-0.01, 1.01, 7])
    def test_threshold_out_of_bounds_names_the_field_and_limit(self, threshold: float) -> None:
        with pytest.raises(ValidationError) as err:
            SafetyCheckerSpec.model_validate({"source": "builtin://redness",
                                              "threshold": threshold})
        text = str(err.value)
        assert "threshold" in text and ("0" in text or "1" in text)

    @pytest.mark.parametrize("source", [
        "builtin://tiny-sdxl",  # a diffusion model is not a classifier
        "builtin://nsfw",
        "ftp://host/checker",
        "pvc://claim/../etc",
        "file:///proc/self",
    ])
    def test_bad_sources_are_refused(self, source: str) -> None:
        with pytest.raises(ValidationError, match="source"):
            SafetyCheckerSpec.model_validate({"source": source})

    @pytest.mark.parametrize("source", [
        "hf://CompVis/stable-diffusion-safety-checker",
        "hf://org/sd15@main", "s3://bucket/checkers/sd", "pvc://models/safety", "file:///w/sc",
    ])
    def test_model_sources_are_accepted(self, source: str) -> None:
        assert SafetyCheckerSpec.model_validate({"source": source}).source == source

    def test_the_pattern_is_the_model_pattern_with_its_own_builtins(self) -> None:
        assert CHECKER_SOURCE_PATTERN.partition("|builtin://")[0] == \
            SOURCE_PATTERN.partition("|builtin://")[0]
        assert CHECKER_SOURCE_PATTERN.endswith("|builtin://(redness))$")

    def test_a_checker_with_safety_disabled_is_refused(self) -> None:
        with pytest.raises(ValidationError, match=r"safety\.enabled is false"):
            SafetySpec.model_validate({"enabled": False,
                                       "checker": {"source": "builtin://redness"}})

    def test_the_pool_spec_carries_it_camel_cased(self) -> None:
        pool = GenerationPoolSpec.model_validate({
            "models": ["m"],
            "safety": {"checker": {"source": "builtin://redness", "threshold": 0.25}},
        })
        assert pool.safety.checker == SafetyCheckerSpec(source="builtin://redness",
                                                         threshold=0.25)
        dumped = pool.model_dump(by_alias=True, exclude_none=True)
        assert dumped["safety"]["checker"] == {"source": "builtin://redness", "threshold": 0.25}

    def test_the_generated_crd_bounds_the_threshold_and_has_the_cel_rule(self) -> None:
        crd = yaml.safe_load((REPO / "crds/generationpools.yaml").read_text())
        spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        safety = spec["properties"]["safety"]
        checker = safety["properties"]["checker"]
        assert checker["properties"]["threshold"]["minimum"] == 0.0
        assert checker["properties"]["threshold"]["maximum"] == 1.0
        assert checker["properties"]["source"]["pattern"] == CHECKER_SOURCE_PATTERN
        assert checker["required"] == ["source"]
        rules = [r["rule"] for r in safety["x-kubernetes-validations"]]
        assert "!has(self.checker) || !has(self.enabled) || self.enabled" in rules


# --- decision ------------------------------------------------------------------------------------


class TestDecision:
    def test_nothing_above_the_threshold_delivers(self) -> None:
        verdicts = [Verdict(0.2, "redness"), Verdict(0.5, "redness")]
        assert decide(verdicts, [1, 2], 0.5) is None  # equal is not above
        assert flagged_count(verdicts, 0.5) == 0

    def test_the_highest_flagged_image_blocks(self) -> None:
        verdicts = [Verdict(0.1, "a"), Verdict(0.7, "b"), Verdict(0.9, "c"), Verdict(0.3, "d")]
        flag = decide(verdicts, [10, 11, 12, 13], 0.5)
        assert flag is not None
        assert (flag.index, flag.seed, flag.verdict) == (2, 12, Verdict(0.9, "c"))
        assert flagged_count(verdicts, 0.5) == 2

    def test_threshold_one_never_blocks(self) -> None:
        assert decide([Verdict(1.0, "redness")], [1], 1.0) is None

    def test_the_blocked_error_has_the_blocklists_shape_with_reason_and_score(self) -> None:
        flag = decide([Verdict(0.1, "x"), Verdict(0.8123456789, "redness")], [5, 6], 0.3)
        assert flag is not None
        err = blocked_error(flag, images=2, flagged=1, threshold=0.3,
                            source="builtin://redness")
        assert (err.code, err.field, err.limit) == ("blocked", "images",
                                                   "safety.checker.threshold=0.3")
        assert (err.reason, err.score) == ("redness", 0.812346)
        assert "image 2 of 2 (seed 6)" in err.message and "0.8123" in err.message
        assert "(1 of 2 flagged)" in err.message
        assert "builtin://redness" in err.message
        # Absent from every other error on the wire (exclude_none).
        assert "score" in err.to_bytes().decode()


# --- checkers on pixels ------------------------------------------------------------------------


class TestRednessChecker:
    checker = safety_models.BuiltinChecker("cpu")

    def test_scores_follow_the_pixels(self) -> None:
        images = [solid((255, 0, 0)), solid((255, 255, 255)), solid((0, 0, 255)),
                  solid((0, 0, 0)), solid((200, 100, 100))]
        scores = [v.score for v in self.checker.score(images)]
        assert scores[0] == pytest.approx(1.0)
        assert scores[1:4] == [pytest.approx(0.0)] * 3
        assert scores[4] == pytest.approx((200 - 100) / 255, abs=1e-6)

    def test_the_score_is_the_red_fraction_of_the_picture(self) -> None:
        pixels = np.zeros((64, 64, 3), dtype=np.uint8)
        pixels[:, :, 2] = 255  # blue
        pixels[:16, :, :] = (255, 0, 0)  # a red quarter
        (v,) = self.checker.score([Image.fromarray(pixels)])
        assert v.score == pytest.approx(0.25, abs=1e-6)
        assert v.reason == "redness"

    def test_mixed_sizes_in_one_call_keep_their_order(self) -> None:
        images = [solid((255, 0, 0), (64, 64)), solid((0, 255, 0), (32, 48)),
                  solid((255, 0, 0), (32, 48)), solid((10, 10, 10), (64, 64))]
        scores = [round(v.score, 4) for v in self.checker.score(images)]
        assert scores == [1.0, 0.0, 1.0, 0.0]

    def test_the_pools_threshold_decides(self) -> None:
        loaded = SafetyChecker.load(SafetyCheckerSpec(source="builtin://redness", threshold=0.3),
                                    device="cpu", cache_dir=None)
        loaded.warmup()
        assert loaded.revision == safety_models.REDNESS_REVISION
        verdicts = loaded.check([solid((255, 0, 0)), solid((0, 200, 0))])
        assert decide(verdicts, [1, 2], loaded.threshold) is not None
        assert decide(verdicts[1:], [2], loaded.threshold) is None

    def test_an_unknown_builtin_is_named(self) -> None:
        with pytest.raises(ValueError, match="unknown builtin safety checker 'nsfw'"):
            safety_models.load_checker("builtin://nsfw", device="cpu")


class TestDiffusersChecker:
    """A StableDiffusionSafetyChecker with random weights, saved and loaded from file://: our
    score is above 0.5 exactly for the images the checker's own forward() blacks out."""

    @pytest.fixture(scope="class")
    def folder(self, tmp_path_factory: pytest.TempPathFactory) -> Path:
        from diffusers.pipelines.stable_diffusion.safety_checker import (
            StableDiffusionSafetyChecker,
        )
        from transformers import CLIPConfig, CLIPImageProcessor

        torch.manual_seed(0)
        config = CLIPConfig(
            text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                         "num_attention_heads": 2},
            vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                           "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
            projection_dim=8)
        model = StableDiffusionSafetyChecker(config).eval()
        processor = CLIPImageProcessor(size={"shortest_edge": 32},
                                       crop_size={"height": 32, "width": 32})
        # One concept: the embedding of a red image, at a threshold a red image passes and a
        # blue one does not.
        red = processor(images=[solid((255, 0, 0))], return_tensors="pt").pixel_values
        with torch.no_grad():
            emb = model.visual_projection(model.vision_model(red)[1])[0]
            model.concept_embeds.copy_(emb.expand_as(model.concept_embeds))
            model.concept_embeds_weights.fill_(0.99)
            model.special_care_embeds.copy_(-emb.expand_as(model.special_care_embeds))
        root = tmp_path_factory.mktemp("checker")
        model.save_pretrained(root / "safety_checker")
        processor.save_pretrained(root / "feature_extractor")
        return root

    def test_scores_match_the_checkers_own_decision(self, folder: Path) -> None:
        from diffusers.pipelines.stable_diffusion.safety_checker import (
            StableDiffusionSafetyChecker,
        )

        checker = SafetyChecker.load(SafetyCheckerSpec(source=f"file://{folder}"),
                                     device="cpu", cache_dir=None)
        assert checker.revision.startswith("sha256:")
        images = [solid((255, 0, 0)), solid((0, 0, 255)), solid((250, 5, 5)),
                  solid((30, 200, 30))]
        verdicts = checker.check(images)
        ours = [v.score > 0.5 for v in verdicts]

        ref = StableDiffusionSafetyChecker.from_pretrained(folder / "safety_checker").eval()
        clip = checker.scorer.processor(images=images, return_tensors="pt").pixel_values  # type: ignore[attr-defined]
        _, theirs = ref(clip_input=clip, images=np.zeros((len(images), 32, 32, 3)))
        assert ours == list(theirs)
        assert ours[0] and not ours[1]  # both outcomes are exercised
        assert all(v.reason.startswith("concept ") for v in verdicts)
        assert all(0.0 <= v.score <= 1.0 for v in verdicts)
