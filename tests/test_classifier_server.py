"""The classifier server answers correctly: top-k softmax, the same answers as the model called
in-process (so batching keeps requests in order), local weights and labels, 400 on bad input."""

import base64
import concurrent.futures
import json
import urllib.request

import pytest
import timm
import torch

from fixtures.drive.payloads import classifier_body, synthetic_image
from fixtures.drive.server import start_server
from fixtures.drive.spec import ServerSpec
from servers.classifier import decode_image
from tests.post import post

MODEL, SIZE, CLASSES = "resnet18", 64, 10
MAX_PIXELS, MAX_BODY_BYTES = 1_000_000, 2_000_000


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classifier")
    torch.manual_seed(0)
    model = timm.create_model(MODEL, pretrained=False, num_classes=CLASSES).eval()
    torch.save(model.state_dict(), folder / "weights.pth")
    (folder / "labels.json").write_text(json.dumps([f"label-{i}" for i in range(CLASSES)]))
    return model, folder


@pytest.fixture(scope="module")
def classifier(weights, tmp_path_factory):
    _, folder = weights
    spec = ServerSpec(
        name="classifier-functional", module="servers.classifier",
        options=(
            ("model", MODEL), ("input-size", SIZE), ("num-classes", CLASSES), ("device", "cpu"),
            ("weights", folder / "weights.pth"), ("labels", folder / "labels.json"), ("top-k", 3),
            # Batches of up to 4 with a generous timeout, so concurrent requests share a batch.
            ("max-batch-size", 4), ("batch-timeout", 0.05), ("threads", 1),
            ("max-pixels", MAX_PIXELS), ("max-body-bytes", MAX_BODY_BYTES),
            ("fast-queue", True),  # asked for; what LitServe built is what test_the_server_says... reads
        ),
    )
    server = start_server(spec, tmp_path_factory.mktemp("logs"))
    yield server
    server.stop()


def expected_top(model, body: bytes, k=3):
    image = decode_image(json.loads(body))  # the JPEG the server sees, not the image before encoding
    data_config = timm.data.resolve_data_config({"input_size": (3, SIZE, SIZE)}, model=model)
    x = timm.data.create_transform(**data_config)(image).unsqueeze(0)
    with torch.inference_mode():
        top = torch.softmax(model(x), dim=-1).topk(k)
    return top.indices[0].tolist(), top.values[0].tolist()


def test_response_is_top_k_softmax_with_labels(classifier):
    status, body = post(f"{classifier.url}/predict", classifier_body(synthetic_image(SIZE)))
    assert status == 200
    predictions = body["predictions"]
    assert len(predictions) == 3
    probs = [p["probability"] for p in predictions]
    assert probs == sorted(probs, reverse=True)
    assert all(0 < p <= 1 for p in probs) and sum(probs) <= 1 + 1e-6
    assert [p["label"] for p in predictions] == [f"label-{p['index']}" for p in predictions]


def test_the_server_reports_the_batch_sizes_its_workers_ran(classifier):
    from fixtures.measure.batches import batch_size_delta, mean_batch_size
    from servers.runtime import STATS_PATH

    body = classifier_body(synthetic_image(SIZE))
    before = classifier.get_json(STATS_PATH)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = [status for status, _ in pool.map(lambda _: post(f"{classifier.url}/predict", body), range(8))]
    assert statuses == [200] * 8
    delta = batch_size_delta(before, classifier.get_json(STATS_PATH))
    assert sum(int(size) * n for size, n in delta["0"].items()) == 8  # every request, in exactly one batch
    assert set(delta["0"]) <= {"1", "2", "3", "4"}  # never above max_batch_size
    assert mean_batch_size(delta) > 1  # eight at once shared batches (50 ms batch timeout)


def test_the_server_says_which_transport_serves_it(classifier):
    """fast_queue=True asks LitServe for its ZMQ transport; the record must hold the transport that was built
    (in litserve 0.2.19 the option sets no field of TransportConfig and mp runs), whatever the version does."""
    import litserve as ls
    from litserve.test_examples import SimpleLitAPI

    from servers.runtime import SERVING_PATH

    built = ls.LitServer(SimpleLitAPI(), accelerator="cpu", fast_queue=True).transport_config.transport_type
    facts = classifier.get_json(SERVING_PATH)
    assert facts["fast_queue"] is True and facts["transport"] == built
    assert facts["accelerator"] == "cpu" and facts["threads_per_worker"] == 1


def test_batched_answers_match_the_model_in_process(classifier, weights):
    model, _ = weights
    bodies = [classifier_body(synthetic_image(SIZE, seed)) for seed in range(8)]
    # Sent concurrently so the server forms batches; each answer must be its own request's.
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda body: post(f"{classifier.url}/predict", body), bodies))
    for request_body, (status, body) in zip(bodies, answers):
        assert status == 200
        indices, probs = expected_top(model, request_body)
        assert [p["index"] for p in body["predictions"]] == indices
        assert [p["probability"] for p in body["predictions"]] == pytest.approx(probs, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize(
    "body, detail",
    [
        (b"{}", "'image' must be a non-empty base64 string"),
        (b'{"image": 3}', "'image' must be a non-empty base64 string"),
        (b'{"image": "not base64 !!"}', "not valid base64"),
        (json.dumps({"image": base64.b64encode(b"plain text, not an image").decode()}).encode(), "not a decodable image"),
        (b"[1, 2]", "must be a JSON object"),
    ],
    ids=["missing-field", "wrong-type", "bad-base64", "not-an-image", "not-an-object"],
)
def test_bad_input_is_a_400_naming_the_problem_and_the_server_keeps_serving(classifier, body, detail):
    status, answer = post(f"{classifier.url}/predict", body)
    assert status == 400
    assert detail in answer["detail"]
    status, _ = post(f"{classifier.url}/predict", classifier_body(synthetic_image(SIZE)))
    assert status == 200


def test_info_describes_the_served_model(classifier):
    with urllib.request.urlopen(f"{classifier.url}/info", timeout=10) as response:
        info = json.loads(response.read())
    assert info["model"]["model"] == MODEL
    assert info["model"]["max_batch_size"] == "4"
    assert info["model"]["device"] == "cpu"


def png_body(image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return json.dumps({"image": base64.b64encode(buffer.getvalue()).decode()}).encode()


@pytest.mark.parametrize(
    "body, status, detail",
    [
        (b"", 400, "request body is empty"),
        (b"{not json", 400, "not valid JSON"),
        (b"x" * (MAX_BODY_BYTES + 1), 413, f"exceeds {MAX_BODY_BYTES} bytes"),
    ],
    ids=["empty-body", "malformed-json", "huge-body"],
)
def test_malformed_and_oversized_bodies_are_4xx(classifier, body, status, detail):
    got, answer = post(f"{classifier.url}/predict", body)
    assert got == status and detail in answer["detail"]
    assert post(f"{classifier.url}/predict", classifier_body(synthetic_image(SIZE)))[0] == 200


def test_an_image_above_the_pixel_limit_is_413(classifier):
    from PIL import Image

    got, answer = post(f"{classifier.url}/predict", png_body(Image.new("RGB", (1001, 1000))))  # 1,001,000 px
    assert got == 413 and "limit is 1000000 pixels" in answer["detail"]


def test_greyscale_and_alpha_images_are_served(classifier):
    image = synthetic_image(SIZE)
    for converted in (image.convert("L"), image.convert("RGBA"), image.convert("P")):
        status, answer = post(f"{classifier.url}/predict", png_body(converted))
        assert status == 200 and len(answer["predictions"]) == 3


def test_a_truncated_image_is_a_400_from_the_worker(classifier):
    import io

    buffer = io.BytesIO()
    synthetic_image(SIZE).save(buffer, format="JPEG")
    cut = buffer.getvalue()[: len(buffer.getvalue()) // 2]  # a valid header, half the pixel data
    status, answer = post(f"{classifier.url}/predict", json.dumps({"image": base64.b64encode(cut).decode()}).encode())
    assert status == 400 and "not a decodable image" in answer["detail"]


def test_one_bad_request_does_not_fail_the_batch_it_arrives_with(classifier):
    """Sent together into a server batching up to 4 with a 50 ms window: the bad one is answered
    400 on its own, the good ones succeed."""
    good = [classifier_body(synthetic_image(SIZE, seed)) for seed in range(3)]
    bad = b'{"image": "not base64 !!"}'
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda body: post(f"{classifier.url}/predict", body), good + [bad]))
    assert [status for status, _ in answers] == [200, 200, 200, 400]
