"""The answer checks a benchmark hands to the load generator: a 200 with garbage, an empty list or another
model's labels is a wrong answer; the real model's top-1 is expected where it is well defined."""

import json

import pytest

from fixtures.drive.answers import classifier_check, expected_top1_for, llm_check
from fixtures.drive.images import missing_images, real_image_bodies
from servers.classifier import ClassifierConfig

LABELS = [f"class_{i}" for i in range(10)]


def answer(*predictions):
    return json.dumps({"predictions": [{"index": i, "label": label, "probability": p} for i, label, p in predictions]}).encode()


@pytest.mark.parametrize("payload, problem", [
    (b"<html>oops</html>", "not JSON"),
    (b'{"predictions": []}', "expected a list of 3 predictions"),
    (answer((3, "class_3", 0.5), (1, "class_1", 0.2), (12, "class_12", 0.1)), "not one of the served model's 10 classes"),
    (answer((3, "tabby cat", 0.5), (1, "class_1", 0.2), (2, "class_2", 0.1)), "the served model's is 'class_3'"),
    (answer((3, "class_3", 1.5), (1, "class_1", 0.2), (2, "class_2", 0.1)), "outside [0, 1]"),
    (answer((3, "class_3", 0.2), (1, "class_1", 0.5), (2, "class_2", 0.1)), "descending"),
    (answer((3, "class_3", 0.6), (1, "class_1", 0.3), (2, "class_2", 0.2)), "sum to 1.10000 > 1"),
])
def test_a_wrong_classifier_answer_says_what_is_wrong(payload, problem):
    assert problem in classifier_check(LABELS, top_k=3)(0, payload)


def test_a_right_answer_passes_and_the_expected_top1_is_checked_per_photo():
    right = answer((3, "class_3", 0.5), (1, "class_1", 0.2), (2, "class_2", 0.1))
    assert classifier_check(LABELS, top_k=3)(0, right) is None
    expecting = classifier_check(LABELS, top_k=3, expected_top1=[3, 1])
    assert expecting(0, right) is None
    assert "top-1 3 for photo 1: the served model's own is 1" in expecting(1, right)


def test_top1_is_expected_of_a_real_fp32_model_only():
    assert expected_top1_for(ClassifierConfig(model="resnet18", input_size=64), [])[0] is None  # random weights
    reduced = ClassifierConfig(pretrained="efficientnet_lite0", model="efficientnet_lite0", precision="bf16")
    assert "may flip near ties" in expected_top1_for(reduced, [])[1]


@pytest.mark.skipif(bool(missing_images()), reason="real photos missing (python -m fixtures.drive.images)")
def test_the_reference_top1_of_the_real_model_is_mostly_the_imagenet_label():
    from fixtures.drive.images import real_images

    config = ClassifierConfig(pretrained="efficientnet_lite0", model="efficientnet_lite0", input_size=224, num_classes=1000)
    bodies = real_image_bodies(224)
    expected, what = expected_top1_for(config, bodies)
    labelled = [(top1, image.imagenet_class) for top1, image in zip(expected, real_images()) if image.imagenet_class is not None]
    assert "top-1 of the fp32 model" in what
    assert sum(top1 == label for top1, label in labelled) >= 0.8 * len(labelled)  # as tests/test_pretrained.py


def test_llm_answers_need_a_finish_reason_and_exactly_max_tokens_under_ignore_eos():
    check = llm_check(max_tokens=32, exact_length=True)
    assert check(32, 32, "stop") is None
    assert check(32, 32, None) == "no finish_reason in the stream"
    assert "31 tokens generated under ignore_eos, 32 asked for" in check(31, 31, "stop")
    assert llm_check(32, exact_length=False)(5, 5, "stop") is None
