"""make install's torch choice against the driver, on fakes (issue: GPU first contact, item 5)."""

import pytest

from fixtures.setup.torch_choice import choose_torch, cuda_of_torch_version, torchvision_for


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
    assert choice.pip_args[:2] == ("--index-url", "https://download.pytorch.org/whl/cu128")
    assert "needs a newer driver" in choice.reason
    torch_pin = next(arg for arg in choice.pip_args if arg.startswith("torch=="))
    assert not Requirement(torch_pin).specifier.contains(installed[0])  # pip must replace it
    assert Requirement(torch_pin).specifier.contains("2.14.1+cu128")
    assert "torchvision==0.29.1+cu128" in choice.pip_args and "torch==2.14.1+cu128" in choice.constraints


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
