"""The human-in-the-loop protocol and what it measures: slice proposals, rounds that do not charge the
simulated user's time to training, and paired comparisons."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_cli import run_cli
from test_engine import fast_config

from napari_semiseg.core.benchmark import Case, run_loop, train_in_rounds
from napari_semiseg.core.comparison import paired
from napari_semiseg.core.errors import InputError
from napari_semiseg.core.proposal import expected_gain, propose_slice
from napari_semiseg.core.trainer import Trainer
from napari_semiseg.core.volume import Volume, labels_on_slices


def test_gain_prefers_an_uncertain_stretch_far_from_labels_to_an_uncertain_slice_beside_one():
    scores = np.full(40, 0.01)
    scores[11] = 0.30  # the most uncertain slice, right beside the label on 10
    scores[24:31] = 0.25  # a stretch of uncertain slices far from any label
    labeled = {10}
    assert propose_slice(scores, labeled, "uncertainty") == 11
    best = propose_slice(scores, labeled, "gain")
    assert 24 <= best <= 30
    gain = expected_gain(scores, labeled)
    assert gain[10] == -np.inf and gain[27] > gain[11]


def test_proposals_skip_labeled_and_not_yet_scored_slices():
    scores = np.array([np.nan, 0.2, 0.9, np.nan, 0.1, 0.3])
    for policy in ("gain", "uncertainty", "spacing"):
        assert propose_slice(scores, {2}, policy) in (1, 4, 5)
    with pytest.raises(InputError, match="Every slice scored so far is labeled"):
        propose_slice(np.array([0.5, np.nan, 0.2]), {0, 2})
    with pytest.raises(InputError, match="Unknown slice proposal"):
        propose_slice(scores, {2}, "random")


def test_spacing_takes_the_middle_of_the_widest_gap_inside_the_structure():
    scores = np.zeros(50)
    scores[10:31] = 0.2  # the structure: slices 10-30; outside it nothing is uncertain
    assert propose_slice(scores, {10, 14, 30}, "spacing") == 22


def test_paired_comparison_counts_wins_losses_and_tests_them():
    a = np.array([0.70, 0.72, 0.75, 0.80, 0.66, 0.71, 0.69, 0.74])
    better = paired(a, a + np.array([0.03, 0.04, 0.02, 0.05, 0.03, 0.06, 0.02, 0.04]))
    assert (better.wins, better.losses) == (8, 0) and better.p < 0.01 and better.mean_difference > 0.03
    noise = paired(a, a + np.array([0.004, -0.003, 0.002, -0.004, 0.001, 0.0, -0.002, 0.003]))
    assert (noise.wins, noise.losses) == (0, 0)  # within the tie margin: neither
    assert paired(a, a).p == 1.0
    with pytest.raises(ValueError):
        paired(a, a[:3])


def blob_case(n=10, size=24) -> Case:
    """A sphere-like structure that changes size along axis 0, and an image that shows it."""
    z, y, x = np.mgrid[:n, :size, :size]
    r = 4 + 3 * np.sin(np.pi * z / (n - 1))
    labels = ((y - size / 2) ** 2 + (x - size / 2) ** 2 < r ** 2).astype(np.uint8)
    labels[0], labels[-1] = 0, 0
    rng = np.random.default_rng(0)
    image = (labels * 1.0 + 0.2 * rng.standard_normal(labels.shape)).astype(np.float32)
    return Case("blob", image, labels)


def test_rounds_pause_the_clock_while_the_user_works():
    import time

    case = blob_case()
    vol = Volume(case.image, labels_on_slices(case.labels, [3, 6], 0), {3, 6})
    trainer = Trainer([vol], fast_config(method="supervised", iterations=None, minutes=1.5 / 60, final_prediction=False))
    rounds = []

    def slow_user(r):  # as long as the whole budget: were it charged, training would end at once
        rounds.append(r)
        time.sleep(1.5)

    t0 = time.perf_counter()
    last = train_in_rounds(trainer, [0.5], slow_user)
    wall = time.perf_counter() - t0
    assert rounds == [0] and last.finished
    assert wall - last.elapsed >= 1.4  # the user's 1.5 s are not in the training time


def test_loop_protocol_adds_the_proposed_slice_with_its_reference_labels_each_round():
    case = blob_case()
    res = run_loop(case, "mean-teacher", k=2, rounds=2, iterations=6, round_iterations=3,
                   policies=("gain", "spacing"), base_config=fast_config(augment=False))
    assert res.start == [3, 6]
    for policy, curve in res.curves.items():
        counts = [len(p["labeled"]) for p in curve]
        assert counts == [2, 3, 4], policy  # one corrected slice per round
        assert all(set(a["labeled"]) < set(b["labeled"]) for a, b in zip(curve, curve[1:]))
        assert all(0.0 <= p["dice"] <= 1.0 and 0.0 <= p["interpolation"] <= 1.0 for p in curve)
        steps = [p["iteration"] for p in curve]  # 6 steps, then 3 a round: each point says how far it got
        assert 6 <= steps[0] < steps[1] < steps[2] == 12, steps
    assert [len(e["labeled"]) for e in res.even] == [2, 3, 4]
    assert len(res.even_engine["labeled"]) == 4 and len(res.ceiling["labeled"]) == case.labels.shape[0]


def test_loop_protocol_from_the_command_line_on_files(tmp_path, hippo_folder):
    data = hippo_folder
    out = tmp_path / "loop.json"
    r = run_cli("benchmark", str(data), "--protocol", "loop", "--k", "3", "--rounds", "2", "--iterations", "6",
                "--axis", "2", "--methods", "mean-teacher", "--threads", "1", "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "even spacing" in r.stdout and "ceiling" in r.stdout
    res = json.loads(out.read_text())["methods"]["mean-teacher"]
    assert res["summary"]["labeled_counts"] == [3, 4, 5]
    assert set(res["summary"]["curves"]) == {"gain", "spacing"}
    assert "final_vs_spacing" in res["summary"]
    # the curves alone: the engine is not trained again on K+R even slices nor on every slice
    r = run_cli("benchmark", str(data), "--protocol", "loop", "--k", "3", "--rounds", "1", "--iterations", "4",
                "--axis", "2", "--methods", "supervised", "--policies", "gain", "--threads", "1", "--curve-only",
                "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "even spacing: interpolation" in r.stdout and "ceiling" not in r.stdout
    res = json.loads(out.read_text())["methods"]["supervised"]
    assert res["summary"]["labeled_counts"] == [3, 4] and "ceiling" not in res["summary"]
    assert all(not v["even_engine"] and not v["ceiling"] for v in res["volumes"])
    r = run_cli("benchmark", str(data), "--protocol", "loop", "--policies", "gain,random", "--iterations", "2",
                "--axis", "2")
    assert r.returncode == 2 and "Unknown slice proposal 'random'" in r.stderr
