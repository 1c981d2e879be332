"""The evaluation metrics (gradcam_core.metrics) against cases worked out by hand on a toy model whose
score is the mean of the image inside a box, against SciPy for the blur, and against pytorch-grad-cam's
ROAD and CamMultImageConfidenceChange on the same maps and images."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gradcam_core import metrics
from gradcam_core.metrics.causal import gaussian_blur, ranks

H = W = 4
BOX = (slice(0, 2), slice(0, 2))  # rows 0-1, columns 0-1: 4 of the 16 pixels


class BoxScore(nn.Module):
    """output[:, 0] = mean of channel 0 inside BOX - outside * mean outside it; output[:, 1] = 0."""

    def __init__(self, outside: float = 0.0) -> None:
        super().__init__()
        self.outside = outside

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inside = torch.zeros(x.shape[-2:], dtype=torch.bool)
        inside[BOX] = True
        score = x[:, 0][:, inside].mean(dim=1) - self.outside * x[:, 0][:, ~inside].mean(dim=1)
        return torch.stack([score, torch.zeros_like(score)], dim=1)


def first(output: torch.Tensor) -> torch.Tensor:
    return output[:, 0]


def box_map() -> torch.Tensor:
    m = torch.zeros(H, W)
    m[BOX] = 1
    return m


def test_deletion_of_the_box_first_is_worked_out_by_hand():
    # one pixel a step; the box's 4 pixels go first: the score falls 1, .75, .5, .25, 0, then stays 0
    curves = metrics.deletion(BoxScore(), torch.ones(1, 1, H, W), box_map()[None], [first], steps=16)
    expected = torch.tensor([1, .75, .5, .25] + [0] * 13, dtype=torch.float64)
    assert torch.allclose(curves.scores[0], expected)
    assert curves.auc[0].item() == pytest.approx((expected.sum() - 0.5).item() / 16)  # 0.125
    assert curves.fractions[[0, -1]].tolist() == [0, 1]


def test_a_map_ranking_pixels_in_reverse_gives_the_worst_deletion_auc():
    model, image = BoxScore(), torch.ones(1, 1, H, W)
    reverse = metrics.deletion(model, image, (1 - box_map())[None], [first], steps=16).auc.item()
    assert reverse == pytest.approx(14 / 16)  # the box survives 12 steps: 13 ones, then .75, .5, .25, 0
    generator = torch.Generator().manual_seed(0)
    others = [metrics.deletion(model, image, torch.rand(1, H, W, generator=generator), [first], steps=16).auc.item()
              for _ in range(20)]
    best = metrics.deletion(model, image, box_map()[None], [first], steps=16).auc.item()
    assert best <= min(others) and max(others) <= reverse and best < reverse


def test_fewer_steps_remove_several_pixels_a_step():
    curves = metrics.deletion(BoxScore(), torch.ones(1, 1, H, W), box_map()[None], [first], steps=4)
    assert curves.scores[0].tolist() == [1, 0, 0, 0, 0]  # 4 pixels a step: the whole box at once


def test_insertion_starts_from_the_blurred_image_and_inserts_the_box_first():
    from scipy import ndimage

    image = torch.arange(1.0, 17.0).reshape(1, 1, H, W)
    curves = metrics.insertion(BoxScore(), image, box_map()[None], [first], steps=16)
    # the baseline: an 11 x 11 Gaussian (sigma 5), normalised, zero padding - SciPy's convolution
    g = np.exp(-((np.arange(11) - 5) ** 2) / 50.0)
    kernel = np.outer(g, g) / np.outer(g, g).sum()
    blurred = ndimage.convolve(image[0, 0].double().numpy(), kernel, mode="constant", cval=0.0)
    assert np.allclose(gaussian_blur(image)[0, 0].numpy(), blurred, atol=1e-5)
    box_pixels = [(0, 0), (0, 1), (1, 0), (1, 1)]  # inserted in this (raster) order: equal map values
    expected = []
    for t in range(17):
        values = [image[0, 0, r, c].item() if i < t else blurred[r, c] for i, (r, c) in enumerate(box_pixels)]
        expected.append(sum(values) / 4)
    assert np.allclose(curves.scores[0].numpy(), expected, atol=1e-5)
    assert curves.scores[0, -1].item() == pytest.approx(image[0, 0][BOX].mean().item())


def test_ranks_are_highest_first_ties_in_raster_order():
    assert ranks(torch.tensor([[0.5, 1.0], [0.5, 0.0]])).tolist() == [[1, 0], [2, 3]]


def test_average_drop_and_increase_in_confidence_by_hand():
    model, image = BoxScore(outside=0.5), torch.ones(1, 1, H, W)  # Y = 1 - 0.5 = 0.5
    keep_box = metrics.confidence_change(model, image, box_map()[None], [first])  # O = 1 - 0 = 1
    assert (keep_box.before.item(), keep_box.after.item()) == (0.5, 1.0)
    assert (keep_box.average_drop.item(), keep_box.increase.item()) == (0.0, 100.0)
    half = torch.ones(H, W)
    half[BOX] = 0.5  # O = 0.5 - 0.5 = 0: the whole score dropped
    dropped = metrics.confidence_change(model, image, (3 * half)[None], [first])  # maps divided by their maximum
    assert (dropped.after.item(), dropped.average_drop.item(), dropped.increase.item()) == (0.0, 100.0, 0.0)


def test_a_map_equal_to_the_box_localizes_and_points():
    cam = torch.zeros(8, 10)
    cam[2:6, 3:8] = 1
    box = metrics.Box(3, 2, 8, 6, label=7)
    assert metrics.map_box(cam) == metrics.Box(3, 2, 8, 6)
    assert metrics.localization(cam, [box], 7) == (1.0, 1.0)
    assert metrics.pointing(cam, [box], 7) == 1.0
    # a box of another class counts for nothing
    assert metrics.localization(cam, [metrics.Box(3, 2, 8, 6, label=1)], 7) == (0.0, 0.0)
    assert metrics.pointing(cam, [metrics.Box(3, 2, 8, 6, label=1)], 7) == 0.0


def test_localization_takes_the_largest_region_above_15_percent_of_the_maximum():
    cam = torch.zeros(10, 10)
    cam[0:2, 0:2] = 1.0  # the maximum: a small region
    cam[5:10, 5:10] = 0.2  # above 15% of it: the largest region
    cam[0:4, 6:10] = 0.1  # below: not part of any region
    assert metrics.map_box(cam) == metrics.Box(5, 5, 10, 10)
    half = metrics.Box(5, 5, 10, 7.5)  # half the region's box: IoU 0.5, localized
    assert metrics.localization(cam, [half]) == (1.0, 0.5)
    assert metrics.localization(cam, [metrics.Box(5, 5, 10, 7.4)])[0] == 0.0
    assert metrics.pointing(cam, [metrics.Box(5, 5, 10, 10)]) == 0.0  # the maximum is elsewhere
    assert metrics.pointing(cam, [metrics.Box(0, 0, 1, 1)]) == 1.0  # the first maximum: pixel (0, 0)
    assert metrics.localization(torch.zeros(4, 4), [half]) == (0.0, 0.0)  # no map, no box


def test_iou_by_hand():
    assert metrics.iou(metrics.Box(0, 0, 2, 2), metrics.Box(1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert metrics.iou(metrics.Box(0, 0, 1, 1), metrics.Box(2, 2, 3, 3)) == 0.0


# --------------------------------------------------------------------- against pytorch-grad-cam


def tiny_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, stride=2), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()


@pytest.fixture(scope="module")
def case():
    model = tiny_classifier()
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 16, 12, generator=generator)
    maps = metrics.unit_maps(torch.rand(2, 16, 12, generator=generator))
    return model, images, maps, [3, 1]


@pytest.mark.parametrize("most_relevant_first", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_road_equals_pytorch_grad_cams_on_the_same_maps(case, most_relevant_first):
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model, images, maps, classes = case
    theirs_class = ROADMostRelevantFirstAverage if most_relevant_first else ROADLeastRelevantFirstAverage
    torch.manual_seed(5)  # the same noise: both draw from torch's generator in the same order
    theirs = theirs_class()(images, maps.numpy(), [ClassifierOutputSoftmaxTarget(c) for c in classes], model)
    torch.manual_seed(5)
    ours = metrics.road(model, images, maps, classes, most_relevant_first=most_relevant_first)
    assert ours.shape == (2, 9)
    assert np.allclose(ours.mean(dim=1).numpy(), theirs, atol=2e-6), (ours.mean(dim=1), theirs)


def test_road_per_level_equals_pytorch_grad_cams_without_noise(case, monkeypatch):
    from pytorch_grad_cam.metrics import road
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    monkeypatch.setattr(road.NoisyLinearImputer.__init__, "__defaults__", (0.0, road.neighbors_weights))
    model, images, maps, classes = case
    ours = metrics.road(model, images, maps, classes, most_relevant_first=True, percentiles=(30, 70), noise=0)
    for i, p in enumerate((30, 70)):
        theirs = road.ROADMostRelevantFirst(p)(images, maps.numpy(), [ClassifierOutputSoftmaxTarget(c) for c in classes],
                                               model)
        assert np.allclose(ours[:, i].numpy(), theirs, atol=2e-6)


def test_the_imputation_keeps_kept_pixels_and_fills_the_mean_of_the_neighbours():
    image = torch.arange(12.0).reshape(1, 3, 4)
    keep = torch.ones(3, 4, dtype=torch.bool)
    keep[1, 1] = False
    out = metrics.impute(image, keep, noise=0)
    assert torch.equal(out[:, keep], image[:, keep])
    # edge neighbours 1/6, diagonal 1/12 of pixel (1, 1): all kept
    expected = (image[0, 0, 1] + image[0, 2, 1] + image[0, 1, 0] + image[0, 1, 2]) / 6 + (
        image[0, 0, 0] + image[0, 0, 2] + image[0, 2, 0] + image[0, 2, 2]) / 12
    assert out[0, 1, 1].item() == pytest.approx(expected.item(), abs=1e-5)
    assert torch.equal(metrics.impute(image, torch.zeros(3, 4, dtype=torch.bool), noise=0), torch.zeros(1, 3, 4))


def test_the_confidence_change_equals_pytorch_grad_cams_cam_mult_image(case):
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model, images, maps, classes = case
    theirs = CamMultImageConfidenceChange()(images, maps.numpy(), [ClassifierOutputSoftmaxTarget(c) for c in classes],
                                            model)
    ours = metrics.confidence_change(model, images, maps, classes)
    assert np.allclose((ours.after - ours.before).numpy(), theirs, atol=1e-6)
