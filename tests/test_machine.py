"""CUDA devices are matched to NVML GPUs by UUID, never by index; without NVML the answer is 'no NVML'."""

import pytest

from fixtures.measure import machine

NVML = [  # NVML enumerates in PCI order: an L4 first, then two H100s
    {"index": 0, "name": "NVIDIA L4", "uuid": "GPU-aaaaaaaa-0000-0000-0000-000000000000", "memory_gib": 22.5},
    {"index": 1, "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-bbbbbbbb-0000-0000-0000-000000000000", "memory_gib": 79.6},
    {"index": 2, "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-cccccccc-0000-0000-0000-000000000000", "memory_gib": 79.6},
]


def test_cuda_visible_devices_maps_cuda_0_to_the_right_nvml_gpu():
    # CUDA_VISIBLE_DEVICES=2,0: CUDA device 0 is NVML's 2, and torch gives the bare UUID.
    mapped = machine.map_cuda_to_nvml(["cccccccc-0000-0000-0000-000000000000", "aaaaaaaa-0000-0000-0000-000000000000"], NVML)
    assert [(m["cuda_index"], m["nvml_index"], m["name"]) for m in mapped] == [
        (0, 2, "NVIDIA H100 80GB HBM3"), (1, 0, "NVIDIA L4")]


def test_an_unknown_uuid_maps_to_none_not_index_0():
    assert machine.nvml_index_for_uuid("dddddddd-0000-0000-0000-000000000000", [g["uuid"] for g in NVML]) is None
    assert machine.map_cuda_to_nvml(["dddddddd"], NVML)[0]["name"] is None
    assert machine.map_cuda_to_nvml(["dddddddd"], [])[0]["nvml_index"] is None  # no NVML at all


def test_uuid_forms_compare_equal():
    assert machine.normalise_uuid("GPU-ABCD-12") == machine.normalise_uuid("abcd12") == "abcd12"
    assert machine.normalise_uuid("MIG-ab-cd") == "abcd"


def test_without_nvml_the_status_says_no_nvml():
    try:
        machine.nvml_gpus()
    except machine.NvmlUnavailable as exc:
        assert str(exc).startswith(("no NVML", "NVML call failed"))
        assert machine.nvml_status().startswith(("no NVML", "NVML call failed"))
        assert machine.gpu_info() == []
    else:
        pytest.skip("NVML is present on this machine")
