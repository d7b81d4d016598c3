"""Keep mmengine's global instances (default scope 'mmdet'/'mmseg' set by
Runner, init_detector, init_model) from leaking into later tests."""
import pytest

from tests.test_reliability.helpers import isolated_mmengine


@pytest.fixture(autouse=True)
def _isolated_mmengine():
    with isolated_mmengine():
        yield
