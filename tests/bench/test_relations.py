"""Relations between benchmarks of one session (fixtures.record.relations), asserted on every machine class,
floors or not. Collected after the other benchmark files, so both sides have run when one is judged."""

import pytest

from fixtures.expected_relations import declared_relations
from fixtures.measure.rounds import smoke_pass
from fixtures.plugin import RELATION_RESULTS
from fixtures.record.relations import judge
from fixtures.variants import CLASSIFIER_TIERS
from servers.runtime import device_type


def _cases():
    for relation in declared_relations():
        tier = relation.better.split("-", 1)[0]
        marks = [pytest.mark.relation] + ([pytest.mark.gpu] if CLASSIFIER_TIERS[tier].device == "cuda" else [])
        yield pytest.param(relation, marks=marks, id=relation.better + "-vs-" + relation.worse)


@pytest.mark.parametrize("relation", list(_cases()))
def test_relation(request, relation, figures_by_id, machine_class):
    if smoke_pass(request.config):
        pytest.skip("smoke pass (nothing timed): one short round is not enough to compare speed")
    tier = relation.better.split("-", 1)[0]
    result = judge(relation, figures_by_id, machine_class(device_type(CLASSIFIER_TIERS[tier].device)))
    request.config.stash.setdefault(RELATION_RESULTS, []).append(result)
    if result.status == "skipped":
        pytest.skip(result.message)
    assert result.status != "violated", f"{relation.name}: {result.message}"
