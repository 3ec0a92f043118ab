"""Missing test inputs (../shared fixtures, CamVid, transformers' fetched common suites) skip on a developer's
machine and fail in CI, so that CI never passes by skipping them."""

from __future__ import annotations

import pytest
from conftest import in_ci, missing_input


@pytest.mark.parametrize("value", ["true", "1", "True"])
def test_missing_inputs_fail_in_ci(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    assert in_ci()
    with pytest.raises(pytest.fail.Exception, match="fixtures are absent.*CI=true"):
        missing_input("fixtures are absent")


@pytest.mark.parametrize("value", [None, "", "false", "0"])
def test_missing_inputs_skip_elsewhere(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert not in_ci()
    with pytest.raises(pytest.skip.Exception, match="fixtures are absent"):
        missing_input("fixtures are absent")
