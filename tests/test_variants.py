"""The variant maps: every spec is one the classifier's own parser accepts, ids are unique, each ladder
step past batch_workers changes exactly one thing, and real-model variants keep the serving options."""

import pytest

from servers import classifier
from fixtures.drive.spec import classifier_args
from fixtures.variants import CLASSIFIER_TIERS, classifier_specs, classifier_variants, with_pretrained


def parsed(spec):
    return classifier.config_from_args(classifier_args(spec))


@pytest.mark.parametrize("tier", list(CLASSIFIER_TIERS))
def test_every_classifier_spec_parses_and_names_are_unique(tier):
    specs = classifier_specs(tier)
    assert len({spec.name for spec in specs.values()}) == len(specs)
    for spec in specs.values():
        assert parsed(spec).threads == CLASSIFIER_TIERS[tier].threads


@pytest.mark.parametrize("tier", list(CLASSIFIER_TIERS))
def test_each_step_after_batch_workers_changes_one_option(tier):
    ladder = classifier_variants(tier)
    reference = dict(ladder["batch_workers"].options)
    for step in set(ladder) - {"baseline", "batch", "batch_workers"}:
        options = dict(ladder[step].options)
        changed = {flag for flag in reference.keys() | options.keys() if reference.get(flag) != options.get(flag)}
        assert len(changed) == 1, f"{step} changes {changed}"


def test_with_pretrained_keeps_serving_options_and_takes_the_models_input_size():
    step = classifier_variants("cpu")["parallel_decode"]
    real = with_pretrained(step, "efficientnet_lite0")
    config = parsed(real)
    assert config.pretrained == "efficientnet_lite0" and config.model == "tf_efficientnet_lite0"
    assert config.input_size == 224 and config.num_classes == 1000 and config.decode_threads == 2
    assert real.option("max-batch-size") == step.option("max-batch-size")


def test_pretrained_refuses_other_weights():
    with pytest.raises(ValueError, match="brings its own weights"):
        classifier.config_from_args(classifier.parse_args(["--pretrained", "catdog", "--weights", "x.pth"]))


def test_amp_precisions_compute_in_half_and_keep_fp32_weights():
    import torch

    assert classifier.torch_dtype("amp_bf16") == torch.float32 and classifier.compute_precision("amp_bf16") == "bf16"
    assert classifier.torch_dtype("bf16") == torch.bfloat16 and classifier.compute_precision("fp32") == "fp32"


def test_a_round_is_several_waves_of_the_concurrent_clients():
    cpu, gpu = CLASSIFIER_TIERS["cpu"], CLASSIFIER_TIERS["gpu"]
    assert [cpu.round_requests(c) for c in cpu.concurrency] == [48, 48]
    assert [gpu.round_requests(c) for c in gpu.concurrency] == [512, 512, 512, 1024, 2048, 4096]
    # A faster server gets longer rounds, never shorter than min_round_s at the warm-up's rate.
    assert cpu.round_requests(8, warm_rps=40.0) == 48 and cpu.round_requests(8, warm_rps=400.0) == 200
    assert gpu.round_requests(8, warm_rps=3000.0) == 3000


def test_the_cpu_peaks_cover_every_precision_the_cpu_tier_serves():
    """The CPU peaks probe fp32 and bf16 only (fp16's emulated probes were slow and no CPU step serves it): a CPU
    step or recipe in another precision would get no compute roofline, so adding one must add its probe."""
    from fixtures.measure.device_peaks import CPU_PEAK_DTYPES
    from fixtures.variants import llm_variants
    from servers.llm_models import RECIPES

    served = {classifier.compute_precision(spec.option("precision")) for spec in classifier_specs("cpu").values()}
    served |= {RECIPES[spec.option("recipe")].precision for spec in llm_variants("cpu").values()}
    assert served <= set(CPU_PEAK_DTYPES), served


def test_with_option_replaces_one_value_in_place_and_refuses_an_unknown_flag():
    spec = classifier_variants("cpu")["batch_workers"]
    changed = spec.with_option("max-batch-size", 4)
    assert [flag for flag, _ in changed.options] == [flag for flag, _ in spec.options]
    assert changed.option("max-batch-size") == 4 and changed.name == spec.name
    with pytest.raises(KeyError, match="no option 'warmup-tokens'"):
        spec.with_option("warmup-tokens", 4)
