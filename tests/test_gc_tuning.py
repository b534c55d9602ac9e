"""sidecar.gc_tuning: the young-generation threshold of a started process."""
import gc

import pytest

from sidecar import gc_tuning


@pytest.fixture
def threshold():
    saved, enabled = gc.get_threshold(), gc.isenabled()
    yield
    gc.set_threshold(*saved)
    if enabled:
        gc.enable()
    else:
        gc.disable()


def test_cpythons_default_is_raised_and_the_older_generations_kept(threshold):
    gc.set_threshold(700, 11, 12)
    gc_tuning.tune()
    assert gc.get_threshold() == (gc_tuning.GEN0, 11, 12)


def test_an_apps_own_threshold_is_kept(threshold):
    gc.set_threshold(50000, 10, 10)
    gc_tuning.tune()
    assert gc.get_threshold() == (50000, 10, 10)


def test_a_disabled_collector_stays_as_it_is(threshold):
    gc.set_threshold(700, 10, 10)
    gc.disable()
    gc_tuning.tune()
    assert not gc.isenabled() and gc.get_threshold() == (700, 10, 10)


def test_a_start_is_quiet_until_tuned(threshold):
    gc.set_threshold(700, 11, 12)
    gc_tuning.quiet_start()
    assert gc.get_threshold() == (gc_tuning.STARTUP_GEN0, 11, 12)
    gc_tuning.tune()
    assert gc.get_threshold() == (gc_tuning.GEN0, 11, 12)


def test_a_quiet_start_keeps_an_own_threshold_and_a_disabled_collector(threshold):
    gc.set_threshold(50000, 10, 10)
    gc_tuning.quiet_start()
    assert gc.get_threshold() == (50000, 10, 10)
    gc.set_threshold(700, 10, 10)
    gc_tuning.quiet_start()
    gc.disable()   # as an app may, while it is imported
    gc_tuning.tune()
    assert not gc.isenabled() and gc.get_threshold() == (700, 10, 10)
