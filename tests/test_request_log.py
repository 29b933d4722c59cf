"""Per-request records (fixtures/drive/request_log.py): what each request did, written beside the saved run, read
back, and drawn as a timeline."""

import json

from fixtures.drive.load import HTTP_ERROR, LoadRun, RequestResult
from fixtures.drive.request_log import read_request_log, request_rows, stream_rows, write_request_log
from fixtures.drive.stream import StreamResult
from fixtures.track.plots import plot_timeline


def test_rows_hold_send_time_schedule_latency_status_and_bytes_per_round():
    first = LoadRun((RequestResult(True, 200, 0.05, sent_s=100.0, response_bytes=312),
                     RequestResult(False, 500, 0.01, "boom", late_s=0.002, kind=HTTP_ERROR, sent_s=100.01)), 0.06, 2)
    second = LoadRun((RequestResult(True, 200, 0.04, sent_s=100.5, response_bytes=310),), 0.04, 2)
    rows = request_rows([first, second])
    assert [(r["round"], r["sent_s"], r["status"], r["kind"], r["bytes"]) for r in rows] == [
        (0, 0.0, 200, "ok", 312), (0, 0.01, 500, HTTP_ERROR, 0), (1, 0.5, 200, "ok", 310)]
    assert rows[1]["scheduled_s"] == 0.008 and rows[1]["error"] == "boom" and rows[0]["latency_ms"] == 50.0


def test_stream_rows_hold_ttft_and_every_gap():
    stream = StreamResult(True, 200, 10.0, (10.1, 10.15, 10.25), 10.3, 3, 20, finish_reason="length")
    (row,) = stream_rows([[stream]])
    assert row["ttft_ms"] == 100.0 and row["itl_ms"] == [50.0, 100.0] and row["latency_ms"] == 300.0 and row["tokens"] == 3


def test_written_records_read_back_and_draw_a_timeline(tmp_path):
    rows = request_rows([LoadRun(tuple(RequestResult(True, 200, 0.01 * (i + 1), sent_s=float(i)) for i in range(5)), 5.0, 1)])
    storage = tmp_path / "storage"
    path = write_request_log(storage / "requests" / "20261124_010000", "cpu-baseline-c1", rows)
    assert path.name == "cpu-baseline-c1.jsonl.gz" and read_request_log(path) == rows
    run = {"benchmarks": [{"param": "cpu-baseline-c1", "name": "test[cpu-baseline-c1]",
                           "extra_info": {"requests_file": str(path.relative_to(storage))}}]}
    (storage / "Linux").mkdir()
    (storage / "Linux" / "0001_run.json").write_text(json.dumps(run))
    png = plot_timeline(storage, "cpu-baseline-c1", tmp_path / "plots")
    assert png.name == "timeline-cpu-baseline-c1.png" and png.stat().st_size > 1000
