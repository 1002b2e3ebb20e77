import random

import pytest

from superserve.supernet.subnets import SearchSpace, SubnetConfig


def test_name_round_trip():
    cfg = SubnetConfig((2, 3, 3), (50, 75, 100))
    assert cfg.name == "d2.3.3-w50.75.100"
    assert SubnetConfig.parse(cfg.name) == cfg


@pytest.mark.parametrize("bad", ["", "bogus", "d2.3-w50.75.100", "d2.3.3w50.75.100", "d2.3.3-w50.75.x", None, 3])
def test_bad_names_are_rejected_with_the_name(bad):
    with pytest.raises(ValueError, match="subnet name"):
        SubnetConfig.parse(bad)


def test_space_validates_choices():
    sp = SearchSpace()
    with pytest.raises(ValueError, match="depth 4"):
        sp.validate(SubnetConfig((4, 1, 1), (25, 25, 25)))
    with pytest.raises(ValueError, match="width 30"):
        sp.validate(SubnetConfig((1, 1, 1), (30, 25, 25)))
    with pytest.raises(ValueError, match="2 stages"):
        sp.validate(SubnetConfig((1, 1), (25, 25)))


def test_space_has_at_least_100_distinct_subnets():
    sp = SearchSpace()
    names = {c.name for c in sp.all()}
    assert len(names) == sp.size() >= 100
    assert sp.largest.name in names and sp.smallest.name in names
    rng = random.Random(1)
    assert all(sp.sample(rng).name in names for _ in range(50))
