"""make install's torch choice against the driver, on fakes (issue: GPU first contact, item 5)."""

import pytest

import os
import subprocess
import sys
from pathlib import Path

from fixtures.setup.torch_choice import (PINNED_TORCH, PUBLISHED_BUILDS, PYPI, WHEELS_BY_DRIVER, choose_torch,
                                         cuda_of_torch_version, torchvision_for)

ROOT = Path(__file__).resolve().parents[1]


def test_a_cpu_machine_gets_the_pinned_pair():
    choice = choose_torch(None, None)
    assert choice.pip_args == ("-c", "constraints.txt", "torch", "torchvision")
    assert "torch==2.14.1" in choice.constraints and "no NVIDIA driver" in choice.reason


def test_an_r535_l4_image_never_gets_the_cuda13_wheel():
    choice = choose_torch("535.104.05", None)
    assert choice.pip_args[:2] == ("--index-url", "https://download.pytorch.org/whl/cu126")
    assert "torch==2.14.1+cu126" in choice.pip_args and "cu126" in choice.reason


def test_a_runner_s_own_torch_is_kept_and_torchvision_comes_from_its_index():
    choice = choose_torch("550.54.15", ("2.11.0+cu126", "12.6"))
    assert choice.pip_args == ("--index-url", "https://download.pytorch.org/whl/cu126", "torch==2.11.0+cu126",
                               "torchvision==0.26.*")
    assert choice.constraints.startswith("torch==2.11.0+cu126") and "keeping" in choice.reason
    # PyPI's own build (no local tag): PyPI's torchvision matches it.
    assert choose_torch("580.65.06", ("2.14.1", "13.0")).pip_args == ("torch==2.14.1", "torchvision==0.29.*")


def test_a_runner_torch_older_than_the_project_minimum_is_replaced():
    choice = choose_torch("550.54.15", ("2.8.0+cu126", "12.6"))
    assert "torch==2.14.1+cu126" in choice.pip_args and "older than 2.11" in choice.reason


def test_an_installed_cuda13_torch_on_an_r570_driver_is_replaced_not_kept_by_pip():
    """pip reads torch==2.14.1 as met by PyPI's installed 2.14.1 (CUDA 13) and would install nothing; the
    doctor would then fail and send the user back to the same no-op. The pins must exclude what is installed."""
    from packaging.requirements import Requirement

    installed = ("2.14.1", "13.0")
    choice = choose_torch("570.86.10", installed)
    assert choice.pip_args[:2] == ("--index-url", "https://download.pytorch.org/whl/cu126")
    assert "needs a newer driver" in choice.reason
    torch_pin = next(arg for arg in choice.pip_args if arg.startswith("torch=="))
    assert not Requirement(torch_pin).specifier.contains(installed[0])  # pip must replace it
    assert Requirement(torch_pin).specifier.contains("2.14.1+cu126")
    assert "torchvision==0.29.1+cu126" in choice.pip_args and "torch==2.14.1+cu126" in choice.constraints


def test_an_installed_cpu_build_on_an_r580_driver_is_forced_out():
    """PyPI's cu130 build has no local tag, so torch==2.14.1 would be met by an installed 2.14.1+cpu."""
    choice = choose_torch("580.65.06", ("2.14.1+cpu", None))
    assert choice.pip_args == ("--force-reinstall", "torch==2.14.1", "torchvision==0.29.1") and "CPU build" in choice.reason


def test_r580_takes_pypi_s_own_build_and_a_too_old_driver_stops():
    assert choose_torch("580.65.06", None).pip_args == ("torch==2.14.1", "torchvision==0.29.1")
    with pytest.raises(SystemExit, match="older than R525"):
        choose_torch("470.82.01", None)


def test_version_helpers():
    assert cuda_of_torch_version("2.11.0+cu126") == "12.6" and cuda_of_torch_version("2.14.1") is None
    assert cuda_of_torch_version("2.14.1+cu130") == "13.0"
    assert torchvision_for("2.14.1") == "0.29.*" and torchvision_for("2.11.0+cu126") == "0.26.*"


@pytest.mark.parametrize("driver", ["525.147.05", "550.54.15", "570.124.06", "575.57.08", "580.65.06", "590.44.01"])
def test_every_driver_gets_a_build_published_for_the_pinned_torch(driver):
    """torch 2.14 has no cu128 build: an R570/R575 runner that was given one stopped at make install."""
    choice = choose_torch(driver, None)
    tag = next(arg.partition("+")[2] for arg in choice.pip_args if arg.startswith("torch==")) or next(
        tag for tag, where in PUBLISHED_BUILDS[PINNED_TORCH].items() if where == PYPI)
    assert tag in PUBLISHED_BUILDS[PINNED_TORCH], (driver, choice.pip_args)
    from_index = choice.pip_args[:1] == ("--index-url",)
    assert from_index == (PUBLISHED_BUILDS[PINNED_TORCH][tag] != PYPI)


def test_every_tag_the_mapping_can_choose_is_published():
    assert {tag for _, tag in WHEELS_BY_DRIVER} <= set(PUBLISHED_BUILDS[PINNED_TORCH])


def fake_index(root: Path, tag: str, wheels: list) -> None:
    """PyTorch's wheel index layout (<index>/torch/ lists the wheel files), in a folder pip reads by file://."""
    page = root / tag / "torch"
    page.mkdir(parents=True)
    links = "".join(f'<a href="{w.replace("+", "%2B")}">{w}</a>' for w in wheels)
    (page / "index.html").write_text(f"<html><body>{links}</body></html>")


def torch_check(tmp_path, driver: str, wheels: list) -> subprocess.CompletedProcess:
    """`python -m fixtures.setup.torch_choice --check` (make doctor's first step) with a fake nvidia-smi
    reporting `driver` and a fake PyTorch index holding `wheels` only."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\necho {driver}\n")
    smi.chmod(0o755)
    fake_index(tmp_path / "whl", "cu126", wheels)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TORCH_INDEX_URL": f"file://{tmp_path}/whl/{{tag}}"}
    return subprocess.run([sys.executable, "-m", "fixtures.setup.torch_choice", "--check"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_make_doctor_names_a_chosen_wheel_the_index_lacks_before_installing(tmp_path):
    py = f"cp{sys.version_info.major}{sys.version_info.minor}"
    out = torch_check(tmp_path, "570.124.06", [f"torch-2.13.0+cu126-{py}-{py}-manylinux_2_28_x86_64.whl"])
    assert out.returncode == 1, out.stderr
    assert "FAIL torch 2.14.1+cu126 is not on" in out.stderr and "Fix:" in out.stderr and "TORCH_INDEX_URL" in out.stderr


def test_the_check_passes_when_the_index_holds_the_chosen_wheel(tmp_path):
    py = f"cp{sys.version_info.major}{sys.version_info.minor}"
    out = torch_check(tmp_path, "570.124.06", [f"torch-2.14.1+cu126-{py}-{py}-manylinux_2_28_x86_64.whl"])
    assert out.returncode == 0 and "PASS" in out.stderr, out.stderr


def test_make_doctor_asks_the_index_before_make_install_starts():
    """The order make runs doctor's steps in (make -n prints them without running)."""
    out = subprocess.run(["make", "-n", "-B", "doctor"], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    lines = out.splitlines()
    check = next(i for i, line in enumerate(lines) if "fixtures.setup.torch_choice --check" in line)
    install = next(i for i, line in enumerate(lines) if "fixtures.setup.installer" in line)
    assert check < install
