"""The Table 1 benchmark (benchmarks/table1_generalization.py) in its --quick mode."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import table1_generalization as t1  # noqa: E402


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("table1") / "table1_quick.json"
    from contextlib import redirect_stdout
    from io import StringIO

    buffer = StringIO()
    with redirect_stdout(buffer):
        assert t1.main(["--quick", "--quiet", "--out", str(out)]) == 0
    return out, buffer.getvalue()


def test_results_json_is_written_and_complete(quick_run):
    out, printed = quick_run
    payload = json.loads(out.read_text())
    cfg = t1.QUICK
    assert payload["n_networks"] == cfg.n_networks == len(payload["population"]) == 12
    # every sampler gives exactly the configured number of points (tolerance: none)
    assert payload["points_per_sampler"] == {s: cfg.n_points for s in t1.SAMPLERS}
    assert cfg.n_points == 2 * 2 * 4
    assert len(payload["classifiers"]) == 11
    assert payload["class_counts"] == {"generalization": [3, 2, 3, 2, 2],
                                       "weight_decay": [4, 4, 4], "augmentation": [6, 6]}
    for row in t1.ROWS:
        for task in t1.TASKS:
            cell = payload["table"][row][task]
            assert 0 <= cell["mean"] <= 100 and cell["se"] >= 0
            assert (cell["paper_mean"], cell["paper_se"]) == t1.PAPER[row][task]
            scores = payload["scores"][row][task]
            assert set(scores) == set(payload["classifiers"])
            for s in scores.values():
                assert len(s["folds"]) == cell["n_splits"] >= 2
                assert all(0 <= f <= 100 for f in s["folds"])
            assert cell["mean"] == pytest.approx(np.mean([s["mean"] for s in scores.values()]))
    for label in t1.ROW_LABELS.values():
        assert label in printed
    assert "39.2 ± 4.3" in printed and "(20.7 ± 1.1)" in printed


def test_features_and_randomized_control(quick_run):
    out, _ = quick_run
    payload = json.loads(out.read_text())
    with np.load(out.with_suffix(".npz"), allow_pickle=False) as npz:
        feats = {k[len("features_"):]: npz[k] for k in npz.files if k.startswith("features_")}
        gen = npz["target_generalization"]
    n, p = payload["n_networks"], t1.QUICK.n_points
    for name in (*t1.SAMPLERS, "randomized"):
        assert feats[name].shape == (n, 2 * p) and np.isfinite(feats[name]).all()
        accuracies = feats[name][:, p:]
        assert ((accuracies >= 0) & (accuracies <= 1)).all()
    # the control scrambles each J&R column across networks: same values, other order
    np.testing.assert_array_equal(np.sort(feats["randomized"], axis=0),
                                  np.sort(feats["jump_retrain"], axis=0))
    assert not np.array_equal(feats["randomized"], feats["jump_retrain"])
    # class 0 holds the lowest test losses
    test_loss = np.array([r["test_loss"] for r in payload["population"]])
    assert test_loss[gen == 0].max() <= test_loss[gen == 4].min()
    # scrambled features carry no information: near chance (loose bounds)
    table, chance = payload["table"], payload["chance"]
    assert table["randomized"]["augmentation"]["mean"] < 75
    excess = np.mean([table["randomized"][t]["mean"] - chance[t] for t in t1.TASKS])
    assert excess < 20
    # while the real J&R features do carry some: augmentation changes the train loss
    assert table["jump_retrain"]["augmentation"]["mean"] > 75


def test_shift_images_moves_by_at_most_one_pixel():
    x = torch.rand(200, 64)
    shifted = t1.shift_images(x, torch.Generator().manual_seed(0)).view(200, 8, 8)
    images = x.view(200, 8, 8)

    def window(d: int) -> tuple[slice, slice]:  # (output, input) ranges for offset d
        return slice(max(0, -d), 8 - max(0, d)), slice(max(0, d), 8 - max(0, -d))

    seen = set()
    for i in range(200):
        matches = []
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                (oy, iy), (ox, ix) = window(dy), window(dx)
                inside = torch.equal(shifted[i, oy, ox], images[i, iy, ix])
                rest = shifted[i].clone()
                rest[oy, ox] = 0
                if inside and not rest.any():
                    matches.append((dy, dx))
        assert matches, f"image {i} is not a zero-filled ±1-pixel shift"
        seen.update(matches)
    assert len(seen) == 9


def test_fold_count_follows_smallest_class():
    assert t1.n_splits_for(np.array([0] * 10 + [1] * 10), 10) == 10
    assert t1.n_splits_for(np.array([0] * 10 + [1] * 3), 10) == 3
    assert t1.n_splits_for(np.array([0] * 10 + [1]), 10) == 2
