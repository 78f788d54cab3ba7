"""Baselines are found the same wherever pytest is launched from (issue: a run from the
parent folder moved the rootdir and every test failed with "no stored baseline")."""

from __future__ import annotations

import pytest

import standin

TEST_FILE = """
def test_image(omni_perf):
    omni_perf.measure(width=32, height=32, num_inference_steps=2)
"""


def test_baselines_follow_the_ini_file_not_the_rootdir(pytester: pytest.Pytester) -> None:
    project = pytester.mkdir("project")
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "conftest.py").write_text(standin.conftest_source())
    (project / "tests").mkdir()
    (project / "tests" / "test_image.py").write_text(TEST_FILE)
    args = ("-p", "no:cacheprovider", "--omni-profile=eager", "--omni-rounds=5")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project)
        pytester.runpytest_subprocess(*args, "--omni-update-baselines").assert_outcomes(passed=1)
    assert list((project / "baselines" / "cpu").iterdir())
    # From the parent folder, with the rootdir moved there: same folder, same key.
    moved = pytester.runpytest_subprocess(*args, "--rootdir=.", "project/tests")
    moved.assert_outcomes(passed=1)
    assert not (pytester.path / "baselines").exists()
