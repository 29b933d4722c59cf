"""make doctor's verdicts on fake machines: its GPU branches run here without a GPU."""

import subprocess
import sys

from fixtures.drive.server import REPO_ROOT
from fixtures.setup.doctor import Facts, checks, gpu_recipe_minimums, gpu_recipe_unverified

PACKAGES = {"torch": "2.14.1", "torchvision": "0.29.1", "litserve": "0.2.19", "timm": "1.0", "transformers": "5.23.0",
            "torchao": "0.18.0", "aiohttp": "3.9"}


def facts(**overrides) -> Facts:
    base = dict(python=(3, 11, 7), packages=PACKAGES, torch_cuda="13.0", driver="580.65.06", cuda_available=True,
                nvml_status="ok: 1 GPU(s), driver 580.65.06", free_disk_gib=50.0,
                gpus=[{"cuda_index": 0, "nvml_index": 0, "name": "NVIDIA L4", "capability": (8, 9), "free_gib": 21.0,
                       "datasheet": "known"}])
    return Facts(**{**base, **overrides})


def verdicts(f: Facts, require_gpu=False) -> dict:
    return {c.name: (c.status, c.detail) for c in checks(f, require_gpu, gpu_recipe_minimums(), gpu_recipe_unverified())}


def test_an_r535_l4_image_with_the_cuda13_torch_fails_with_the_fix():
    found = verdicts(facts(driver="535.104.05", cuda_available=False, gpus=[], nvml_status="ok: 1 GPU(s)"))
    status, detail = found["torch build"]
    assert status == "FAIL" and "CUDA 13.0 build; driver 535.104.05 < R580" in detail and "make install" in detail
    assert found["cuda"][0] == "FAIL"  # a driver but no CUDA: never a quiet skip


def test_a_t4_skips_the_recipes_it_cannot_run_and_says_which():
    t4 = [{"cuda_index": 0, "nvml_index": 0, "name": "Tesla T4", "capability": (7, 5), "free_gib": 14.5, "datasheet": "known"}]
    status, detail = verdicts(facts(gpus=t4))["cuda:0 recipes"]
    assert status == "WARN" and "gpu-llm_torchao_int4wo" in detail and "gpu-llm_torchao_float8" in detail
    h100 = [{**facts().gpus[0], "name": "NVIDIA H100 80GB HBM3", "capability": (9, 0)}]
    assert verdicts(facts(gpus=h100))["cuda:0 recipes"][0] == "PASS"  # an H100 (9.0) runs them all


def test_an_l4_runs_every_recipe_and_names_float8_as_unverified_on_sm89():
    status, detail = verdicts(facts())["cuda:0 recipes"]  # an L4 is (8, 9)
    assert status == "WARN" and "will skip" not in detail
    assert "unverified on this capability until measured: gpu-llm_torchao_float8" in detail and "_scaled_mm" in detail


def test_a_cuda_device_missing_from_nvml_fails_and_an_unknown_datasheet_warns():
    unmapped = [{"cuda_index": 0, "nvml_index": None, "name": None, "capability": (9, 0), "free_gib": 70.0,
                 "datasheet": "unknown: no NVML name for this CUDA device: measured peaks only"}]
    found = verdicts(facts(gpus=unmapped))
    assert found["nvml"][0] == "FAIL" and "not found in NVML by UUID" in found["nvml"][1]
    assert found["cuda:0 datasheet"] == ("WARN", "None: unknown: no NVML name for this CUDA device: measured peaks only")


def test_no_gpu_warns_unless_a_gpu_is_required():
    cpu = facts(driver=None, torch_cuda="13.0", cuda_available=False, gpus=[], nvml_status="no NVML: library not found")
    assert {c.status for c in checks(cpu, False, {})} <= {"PASS", "WARN"}
    required = verdicts(cpu, require_gpu=True)
    assert required["driver"][0] == required["cuda"][0] == "FAIL" and "no GPU" in required["driver"][1]


def test_doctor_runs_here_and_gpu_smoke_stops_at_once_without_a_gpu():
    doctor = subprocess.run([sys.executable, "-m", "fixtures.setup.doctor"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert "python" in doctor.stdout and "doctor:" in doctor.stdout
    from fixtures.measure.machine import cuda_available

    if cuda_available():
        return
    assert doctor.returncode == 0 and "WARN  driver" in doctor.stdout, doctor.stdout
    smoke = subprocess.run(["make", "-s", "gpu-smoke"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert smoke.returncode != 0 and "FAIL  cuda" in smoke.stdout and "collected" not in smoke.stdout, smoke.stdout[-2000:]
