"""The dark-run plan: which parameters a dark run sets, which file it writes, which outputs
it reads."""

from __future__ import annotations

import numpy as np
import pytest

from actors.core.darkrun import dark_arrays, dark_run_warnings, plan_dark_run
from actors.reduce.base import Series

JF = {"type": "jungfrau", "gain_file": "g.npy", "pedestal_file": "/calib/p.h5"}


def test_the_plan_names_the_parameters_and_defaults_to_the_converter_s_file() -> None:
    specs = [JF, {"type": "jungfrau_pedestal"}]
    plan = plan_dark_run(specs, {"pedestal_file": "/calib/p.h5", "file": None})
    assert (plan.gain, plan.record, plan.file) == ("gain", "record", "/calib/p.h5")
    assert plan.reload == (("pedestal_file", "/calib/p.h5"),)
    assert plan_dark_run(specs, {"pedestal_file": "/calib/p.h5", "file": "/x.h5"}).file == "/x.h5"
    assert plan_dark_run(specs, {}, file="/y.h5").file == "/y.h5"


@pytest.mark.parametrize("specs, current, match", [
    ([JF], {}, "exactly one jungfrau_pedestal"),
    ([{"type": "jungfrau_pedestal"}] * 2, {}, r"found 2"),
    ([{"type": "jungfrau_pedestal"}], {}, "no pedestal file to write"),
])
def test_a_chain_that_cannot_take_a_dark_run_says_what_to_add(
        specs: list[dict[str, object]], current: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        plan_dark_run(specs, current)


def test_outputs_are_read_by_their_qualified_name_when_another_reducer_shares_it() -> None:
    plan = plan_dark_run([JF, {"type": "jungfrau_pedestal", "name": "dark"}], {}, file="/z.h5")
    mean = np.full((2, 3), 5.0)
    outputs = {"dark.pedestal_mean": mean, "pedestal_mean": np.zeros((2, 3)),
               "pedestal_std": np.ones((2, 3)), "pedestal_count": np.full((2, 3), 4),
               "dark_frames": 4,
               "wrong_gain_pixels": Series(np.arange(4), np.array([0, 0, 6, 0]))}
    got_mean, std, count, frames, wrong = dark_arrays(outputs, plan)
    assert np.array_equal(got_mean, mean) and frames == 4  # the qualified one, not the 0s
    assert wrong == 6 / (4 * 6)
    assert len(dark_run_warnings(1, wrong, count)) == 1  # 25 % in another gain
    assert dark_run_warnings(1, 0.0, count) == []
