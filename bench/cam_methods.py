"""The CAM methods' rows of the benchmark: ``python bench/run.py --only methods`` (also part of the
full run). Every row is a ratio measured side by side, in the same rounds, in one run.

1. **Gradient methods and Eigen-CAM against the floor** on the full-size VGG-16 (relu5_3, 512
   channels) and a torchvision ResNet-50 with random weights (``torch.manual_seed(0)``, layer4, 2048
   channels, torchvision's ImageNet preprocessing): each gradient method alone (``explain(...,
   method=name, guided=False)``), the six of them in one call (``method=[...]``: one forward, one
   backward to the layer shared), the same with Eigen-Grad-CAM, and Eigen-CAM (no backward at all).
   ``--repeats`` interleaved rounds after a warm-up round.
2. **Score-CAM** on the VGG-16 and on the bundled SqueezeNet 1.1 (the Caffe files, ``fire9/concat``,
   512 channels; loaded as the formats rows load it). Its own floor is one forward per channel: the C
   masked images (``image * upsampled, min-max normalised channel map``, made before timing) through
   the model under ``torch.no_grad()`` in batches of the size ours ran (a forward pre-hook counts
   ours' batches in the same round), nothing else. Against it: ours for one target, pytorch-grad-cam's
   ``ScoreCAM`` for one target, ours for 4 targets in one call and pytorch-grad-cam's 4 runs (timed
   one by one: its first run, the one-target target, is its one-target time). No warm-up round (a VGG-16
   call is 512 forwards); ``--scorecam-rounds`` rounds on VGG-16 (default 1), three times as many on
   SqueezeNet. Peak memory: each variant once in a fresh process (bench/_child.py) that loads the
   model, runs one plain forward (the weights' pages resident, the kernels set up), resets its peak
   (``/proc/self/clear_refs`` 5), makes one call and reports ``VmHWM`` minus the ``VmRSS`` before the
   call: the call's own peak, model excluded. That run's map is also the one checked against the
   other's before the timed rounds.
3. **Ablation-CAM** on VGG-16 and ResNet-50: ours (the layers below the layer run once; the C ablated
   activations go through the layers above it in batches) against pytorch-grad-cam's ``AblationCAM``
   (its defaults: batches of 32 copies of the image through the whole model, the layer's output
   replaced); peak memory and the maps' agreement from fresh processes as for Score-CAM; rounds as
   Score-CAM's on VGG-16.
4. **The CLI's default guided path** (``explain(net, x, layer, [c])``: Grad-CAM + guided backprop +
   guided Grad-CAM, ``torch7_ties`` as the model says) against the floor on VGG-16 and on the Caffe
   SqueezeNet at ``fire9/concat`` (the formats rows' layer) and ``relu_conv10`` (the CLI's default
   layer for it); ``4 * --repeats`` rounds of 3 calls there, as the formats rows.

Every map is checked before timing against pytorch-grad-cam's class for the method, called as its
README shows on the same torch module (both maps min-max normalised, ours resized by cv2 as it
resizes its own); the notes list the differences. A method that is not registered yet
(``gradcam_core.engine.methods.method_names()``) gets a "skipped" row.
"""
from __future__ import annotations

import contextlib
import gc
import io
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import common
from common import CLASS, CLASSES_K4, LAYER, MB, ROOT, SQUEEZENET, Report, Row, fmt_s, load_average

GRADIENT_METHODS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "gradcam-elementwise", "layercam")
"""The gradient methods: a map from the layer's activations and their gradients (one backward to the layer)."""
EIGENGRAD = "eigengradcam"
PGC_CLASS = {  # our method name -> pytorch-grad-cam's class
    "gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "xgradcam": "XGradCAM", "hirescam": "HiResCAM",
    "gradcam-elementwise": "GradCAMElementWise", "layercam": "LayerCAM", "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM", "scorecam": "ScoreCAM", "ablationcam": "AblationCAM",
}
AGREE = 1e-3  # max abs. difference of the min-max normalised maps

SECTION_GRAD = "CAM methods: gradient methods and Eigen-CAM against the floor (guided=False)"
SECTION_SCORE = "CAM methods: Score-CAM against its own floor and pytorch-grad-cam's ScoreCAM (guided=False)"
SECTION_ABLATION = "CAM methods: Ablation-CAM against pytorch-grad-cam's AblationCAM (guided=False)"
SECTION_GUIDED = "CAM methods: the CLI's default guided path (Grad-CAM + guided backprop + guided Grad-CAM)"


# --------------------------------------------------------------------------------------------------
# The nets


@dataclass
class Net:
    """A net of these rows, with its input, layer and the module pytorch-grad-cam is given."""

    key: str  # "vgg16", "resnet50", "squeezenet"
    what: str  # how rows name it
    net: object
    x: object  # (1, 3, S, S), the net's own preprocessing
    layer: str
    module: object  # the layer's module (pytorch-grad-cam's target layer)


def load_net(key: str, cache: Path, image: Path, size: int = 224) -> Net:
    """One of the benchmark's nets and its input (``size`` x ``size``), as the rows use them."""
    import torch

    from gradcam_core.image.preprocessing import Preprocessing, load_input

    if key == "vgg16":
        from gradcam_core import image as imageops
        from gradcam_core.tasks.classify import load_classifier

        proto, model = common.ensure_vgg16(cache)
        net = load_classifier(proto, model)
        return Net(key, "VGG-16", net, imageops.preprocess(image, size, size)[None], LAYER, net.module_at(LAYER))
    if key == "resnet50":
        import torchvision

        torch.manual_seed(0)
        net = torchvision.models.resnet50(weights=None).eval()
        x = load_input(image, size, size, Preprocessing.torchvision_imagenet())[None]
        return Net(key, "ResNet-50", net, x, "layer4", net.layer4)
    if key == "squeezenet":
        from gradcam_core.tasks.classify import load_model

        clf = load_model(SQUEEZENET / "squeezenet1_1.caffemodel", proto_file=SQUEEZENET / "deploy.prototxt")
        layer = "fire9/concat"
        return Net(key, "SqueezeNet 1.1", clf.net, load_input(image, size, size, clf.preprocessing)[None], layer,
                   clf.net.module_at(layer))
    raise ValueError(key)


NET_LINES = {
    "vgg16": "the full-size VGG-16 (V1 caffemodel, random weights; layer relu5_3, 512 channels)",
    "resnet50": "torchvision's resnet50 with random weights (torch.manual_seed(0); layer4, 2048 channels; "
                "torchvision's ImageNet preprocessing)",
    "squeezenet": "the bundled SqueezeNet 1.1 as Caffe files (ImageNet-trained; layer fire9/concat, 512 channels)",
}


def registered() -> list[str]:
    from gradcam_core.engine.methods import method_names

    return method_names()


# --------------------------------------------------------------------------------------------------
# Maps: ours against pytorch-grad-cam's


def normalised(raw, width: int, height: int):
    """A (h, w) map as pytorch-grad-cam makes its own: minus its min, over 1e-7 + its max, cv2-resized,
    and the same scaling again (its layer aggregation's: a resized map's extremes are not 0 and 1)."""
    import cv2
    import numpy as np

    def scaled(m):
        m = m - m.min()
        return m / (1e-7 + m.max())

    raw = np.float32(scaled(np.asarray(raw, dtype=np.float32)))
    return scaled(np.maximum(cv2.resize(raw, (width, height)), 0))


def pgc_map(method: str, n: Net, target: int = CLASS, flipped: list | None = None):
    """pytorch-grad-cam's (H, W) map of ``method`` for one target, called as its README shows; its
    progress bars (Score-CAM, Ablation-CAM) go to a buffer; the weight gradients it builds are reset.
    For Eigen-CAM and Eigen-Grad-CAM, ``flipped`` gets the map it would give with the principal
    component's sign flipped (from its own activations and gradients; the sign is arbitrary)."""
    import numpy as np
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    cls = getattr(pytorch_grad_cam, PGC_CLASS[method])
    # its targets take one image's output; ClassifierOutputTarget indexes a (classes,) row, and the Caffe
    # SqueezeNet gives (1000, 1, 1): there the same class of the flattened row
    pick = ClassifierOutputTarget(target) if n.key != "squeezenet" else _FlatTarget(target)
    out = None
    with contextlib.redirect_stderr(io.StringIO()), cls(model=n.net, target_layers=[n.module]) as cam:
        out = cam(input_tensor=n.x, targets=[pick])[0]
        if flipped is not None and method in ("eigencam", "eigengradcam"):
            terms = cam.activations_and_grads.activations[0].numpy()
            if method == "eigengradcam":
                terms = terms * cam.activations_and_grads.gradients[0].numpy()
            flipped.append(normalised(np.maximum(-get_2d_projection(terms)[0], 0), out.shape[1], out.shape[0]))
    n.net.zero_grad(set_to_none=True)
    if out is None:  # its __exit__ swallows an IndexError (after printing it)
        raise RuntimeError(f"pytorch-grad-cam's {cls.__name__} failed with an IndexError")
    return out


class _FlatTarget:
    """One class of an image's flattened output (pytorch-grad-cam's ClassifierOutputTarget for outputs
    with trailing 1 x 1 axes)."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __call__(self, output):
        return output.reshape(-1)[self.index]


def compare(method: str, ours_raw, theirs, n: Net, flipped: list | None = None) -> tuple[bool, str]:
    """(agree, one line): ours (h, w) raw map against pytorch-grad-cam's (H, W) map (or, for the
    eigen methods, the one with the other sign of the principal component, ``flipped[0]``)."""
    import numpy as np

    h, w = theirs.shape
    mine = normalised(ours_raw, w, h)
    e = float(np.abs(mine - theirs).max())
    text = f"{n.what} {method}: ours vs pytorch-grad-cam {PGC_CLASS[method]}, max abs. diff {e:.1e}"
    if e <= AGREE or not flipped:
        return e <= AGREE, text
    e2 = float(np.abs(mine - flipped[0]).max())
    return e2 <= AGREE, text + f"; against its map with the principal component's sign flipped: {e2:.1e}"


# --------------------------------------------------------------------------------------------------
# Timing


def timed_rounds(variants: dict[str, Callable[[], object]], rounds: int, *, warmup: bool,
                 after: Callable[[], None] | None = None) -> dict[str, list[float]]:
    """As ``common.interleaved`` (every variant once per round, ``after`` untimed after each call), with
    the warm-up round optional (a Score-CAM call on VGG-16 is minutes)."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    for rnd in range(rounds + (1 if warmup else 0)):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            if after:
                after()
            if rnd or not warmup:
                times[name].append(dt)
        done = rnd + (0 if warmup else 1)
        if done:
            print(f"  round {done}/{rounds} done (load {load_average()})", flush=True)
    return times


def paired(times: dict[str, list[float]], a: str, b: str) -> float:
    """The median over rounds of time(a) / time(b) within a round."""
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def add_row(report: Report, times: dict[str, list[float]], key: str, what: str, section: str, floor: str,
            target: str = "", bound: float | None = None, per: int = 1, extra: str = "") -> Row:
    t = times[key]
    r = report.add(Row(what, statistics.median(t) / per, min(t) / per, paired(times, key, floor) / per,
                       section=section, target=target, extra=extra))
    if bound is not None:
        r.ok = r.ratio <= bound
    return r


def skipped(report: Report, what: str, section: str, missing: list[str], target: str = "") -> None:
    report.add(Row(what, section=section, target=target,
                   extra="skipped: not registered yet: " + ", ".join(missing)))


# --------------------------------------------------------------------------------------------------
# 1. Gradient methods and Eigen-CAM


def gradient_rows(n: Net, names: list[str], repeats: int, report: Report, lines: list[str]) -> bool:
    from gradcam_core.engine import explain

    ok = True
    here = [m for m in (*GRADIENT_METHODS, EIGENGRAD, "eigencam") if m in names]
    if "pytorch_grad_cam" in sys.modules:
        for m in here:
            e = explain(n.net, n.x, n.layer, [CLASS], guided=False, method=m)
            flipped: list = []
            theirs = pgc_map(m, n, flipped=flipped)
            good, text = compare(m, e.cam_raw[0, 0], theirs, n, flipped)
            ok &= good
            lines.append(f"{'ok  ' if good else 'BAD '} {text}")

    v: dict[str, Callable[[], object]] = {"floor": common.floor_of(n.net, n.x)}
    for m in here:
        v[m] = (lambda m=m: explain(n.net, n.x, n.layer, [CLASS], guided=False, method=m))
    six = list(GRADIENT_METHODS)
    if all(m in names for m in six):
        v["six"] = lambda: explain(n.net, n.x, n.layer, [CLASS], guided=False, method=six)
        if EIGENGRAD in names:
            v["seven"] = lambda: explain(n.net, n.x, n.layer, [CLASS], guided=False, method=[*six, EIGENGRAD])
    print(f"{n.what}: timing {len(v)} variants, {repeats} interleaved rounds ...", flush=True)
    times = timed_rounds(v, repeats, warmup=True, after=lambda: n.net.zero_grad(set_to_none=True))

    s = SECTION_GRAD
    add_row(report, times, "floor", f"{n.what}: floor, 1 forward + 1 backward to the input", s, "floor")
    for m in (*GRADIENT_METHODS, EIGENGRAD):
        what = f"{n.what}: ours, {m} alone at `{n.layer}`"
        if m in times:
            add_row(report, times, m, what, s, "floor", "≤ 0.70× floor", 0.70)
        else:
            skipped(report, what, s, [m], "≤ 0.70× floor")
    what = f"{n.what}: ours, the six gradient methods ({', '.join(six)}) in one call"
    if "six" in times:
        r = add_row(report, times, "six", what, s, "floor", "≤ 0.80× floor", 0.80)
        r.extra = f"{paired(times, 'six', 'gradcam'):.2f}× Grad-CAM alone"
    else:
        skipped(report, what, s, [m for m in six if m not in names], "≤ 0.80× floor")
    what = f"{n.what}: ours, the six and {EIGENGRAD} in one call"
    if "seven" in times:
        r = add_row(report, times, "seven", what, s, "floor", "≤ 0.80× floor", 0.80)
        r.extra = f"{paired(times, 'seven', 'gradcam'):.2f}× Grad-CAM alone"
    else:
        skipped(report, what, s, [m for m in (*six, EIGENGRAD) if m not in names], "≤ 0.80× floor")
    what = f"{n.what}: ours, eigencam at `{n.layer}` (no backward)"
    if "eigencam" in times:
        add_row(report, times, "eigencam", what, s, "floor", "≤ 0.40× floor", 0.40)
    else:
        skipped(report, what, s, ["eigencam"], "≤ 0.40× floor")
    return ok


# --------------------------------------------------------------------------------------------------
# Fresh processes: one call's peak memory and its map


def probe(argv: list[str]) -> None:
    """In a fresh process (``cam_methods.probe``, see :func:`probe_run`): load a net, one plain forward,
    the peak reset, then ONE call of a variant; prints a JSON line (the peak over the RSS before the
    call, seconds, the batches ours ran) and saves the map to ``out``."""
    import re

    import numpy as np
    import torch

    spec = json.loads(argv[0])
    torch.set_num_threads(spec["threads"])

    def status(key: str) -> int:
        with open("/proc/self/status") as f:
            return int(re.search(key + r":\s+(\d+)", f.read()).group(1)) * 1024

    n = load_net(spec["net"], Path(spec["cache"]), Path(spec["image"]), spec["size"])
    with torch.no_grad():
        n.net(n.x)
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status("VmRSS")
    batches: list[int] = []
    t0 = time.perf_counter()
    if spec["variant"] == "ours":
        from gradcam_core.engine import explain

        # the batch of each forward at the output: masked images (Score-CAM), ablated copies (Ablation-CAM)
        hook = n.net.register_forward_hook(lambda _m, _args, out: batches.append(int(out.shape[0])))
        e = explain(n.net, n.x, n.layer, [CLASS], guided=False, method=spec["method"])
        hook.remove()
        seconds = time.perf_counter() - t0
        peak = status("VmHWM") - base
        np.save(spec["out"], e.cam_raw[0, 0].numpy())
    else:
        out = pgc_map(spec["method"], n)
        seconds = time.perf_counter() - t0
        peak = status("VmHWM") - base
        np.save(spec["out"], out)
    print(json.dumps({"peak": peak, "base": base, "seconds": seconds, "batches": batches}))


def probe_run(net: str, method: str, variant: str, cache: Path, image: Path, size: int, threads: int) -> dict:
    """:func:`probe` in a fresh interpreter: its JSON plus ``map`` (the saved array), or ``error``."""
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "map.npy")
        spec = {"net": net, "method": method, "variant": variant, "cache": str(cache), "image": str(image),
                "size": size, "threads": threads, "out": out}
        code = f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import cam_methods; cam_methods.probe(sys.argv[1:])"
        wall, vmhwm, rc, stdout, stderr = common.run_child(["-c", code, json.dumps(spec)], ROOT, common.child_env(threads))
        if rc != 0:
            return {"error": (stderr.strip().splitlines() or [f"exit code {rc}"])[-1][:300]}
        res = json.loads(stdout.strip().splitlines()[-1])
        res["map"] = np.load(out)
        res["wall"], res["vmhwm"] = wall, vmhwm
    return res


def probes(n: Net, method: str, cache: Path, image: Path, size: int, threads: int,
           lines: list[str]) -> tuple[dict, dict | None, bool]:
    """Ours and (if installed) pytorch-grad-cam's one call in fresh processes: (ours, theirs, agree)."""
    print(f"{n.what} {method}: one call of ours in a fresh process ...", flush=True)
    ours = probe_run(n.key, method, "ours", cache, image, size, threads)
    if "pytorch_grad_cam" not in sys.modules:
        return ours, None, True
    print(f"{n.what} {method}: one call of pytorch-grad-cam's {PGC_CLASS[method]} in a fresh process ...", flush=True)
    theirs = probe_run(n.key, method, "pgc", cache, image, size, threads)
    if "error" in ours or "error" in theirs:
        lines.append(f"BAD  {n.what} {method}: a probe failed: {ours.get('error') or theirs.get('error')}")
        return ours, theirs, False
    good, text = compare(method, ours["map"], theirs["map"], n)
    lines.append(f"{'ok  ' if good else 'BAD '} {text}")
    return ours, theirs, good


def memory_row(report: Report, section: str, n: Net, method: str, ours: dict, theirs: dict | None,
               target: str = "", bound: float | None = None) -> None:
    what = (f"{n.what}: peak memory of one call, one target (fresh process each; the peak over the RSS "
            "before the call, model loaded and run once)")
    if "error" in ours or (theirs is not None and "error" in theirs):
        report.add(Row(what, section=section, target=target,
                       extra=f"probe failed: {ours.get('error') or (theirs or {}).get('error')}"))
        return
    extra = f"ours {ours['peak'] / MB:.0f} MB"
    batches = ours["batches"][1:]  # the first forward is the engine's own, of the image
    if batches:
        extra += f" (its batches: {max(batches)} {'masked images' if method == 'scorecam' else 'ablated copies'})"
    r = report.add(Row(what, section=section, target=target, extra=extra))
    if theirs is not None:
        ratio = ours["peak"] / max(theirs["peak"], 1)
        r.extra += (f", pytorch-grad-cam's {PGC_CLASS[method]} {theirs['peak'] / MB:.0f} MB: {ratio:.2f}× its peak; "
                    f"whole processes' peaks {ours['vmhwm'] / MB:.0f} and {theirs['vmhwm'] / MB:.0f} MB")
        if bound is not None:
            r.ok = ratio <= bound


# --------------------------------------------------------------------------------------------------
# 2. Score-CAM


def masked_images(n: Net, activations):
    """The C masked images of Score-CAM, (C, 3, H, W): the image times each channel's map, upsampled
    bilinearly (align_corners, pytorch-grad-cam's UpsamplingBilinear2d) and min-max normalised."""
    import torch
    import torch.nn.functional as F

    up = F.interpolate(activations, size=n.x.shape[-2:], mode="bilinear", align_corners=True)[0]  # (C, H, W)
    lo = up.amin(dim=(1, 2), keepdim=True)
    hi = up.amax(dim=(1, 2), keepdim=True)
    with torch.no_grad():
        return n.x * ((up - lo) / (hi - lo + 1e-8))[:, None]


def scorecam_rows(n: Net, rounds: int, cache: Path, image: Path, threads: int, report: Report,
                  lines: list[str]) -> bool:
    from gradcam_core.engine import explain

    s = SECTION_SCORE
    size = n.x.shape[-1]
    label = f"{n.what} (`{n.layer}`)"
    if "scorecam" not in registered():
        for what, target in (("floor: one forward per channel, batched", ""), ("ours, one target", "≤ 1.10× floor"),
                             ("ours, 4 targets in one call", "≤ 0.30× pytorch-grad-cam's 4 runs"),
                             ("peak memory of one call", "≤ 1.5× pytorch-grad-cam's peak")):
            skipped(report, f"{label}: {what}", s, ["scorecam"], target)
        return True
    ours_probe, theirs_probe, ok = probes(n, "scorecam", cache, image, size, threads, lines)

    base = explain(n.net, n.x, n.layer, [CLASS], guided=False)
    masked = masked_images(n, base.activations)  # (C, 3, H, W), before timing
    channels = masked.shape[0]
    flat = base.activations[0].flatten(1)
    constant = int((flat.amax(dim=1) == flat.amin(dim=1)).sum())
    batches: list[int] = []
    hook = n.net.register_forward_pre_hook(lambda _m, args: batches.append(int(args[0].shape[0])))
    seen: list[int] = []  # the batch size of ours' last call, for the floor

    def ours(targets: list[int]) -> None:
        batches.clear()
        explain(n.net, n.x, n.layer, targets, guided=False, method="scorecam")
        seen[:] = [max(batches[1:] or batches)]

    def floor() -> None:
        import torch

        b = seen[0]
        with torch.no_grad():
            for i in range(0, channels, b):
                n.net(masked[i:i + b])

    pgc_runs: list[list[float]] = []

    def pgc4() -> None:
        runs = []
        for t in CLASSES_K4:
            t0 = time.perf_counter()
            pgc_map("scorecam", n, t)
            runs.append(time.perf_counter() - t0)
        pgc_runs.append(runs)

    v: dict[str, Callable[[], object]] = {"ours": lambda: ours([CLASS]), "floor": floor}
    if theirs_probe is not None:
        v["pgc4"] = pgc4
    v["ours4"] = lambda: ours(CLASSES_K4)
    print(f"{label} Score-CAM: timing {len(v)} variants, {rounds} round(s), no warm-up ...", flush=True)
    try:
        times = timed_rounds(v, rounds, warmup=False, after=lambda: n.net.zero_grad(set_to_none=True))
    finally:
        hook.remove()
    used = seen[0]
    add_row(report, times, "floor", f"{label}: floor, the {channels} masked images through the model, "
            f"batches of {used} (ours' batch size), no gradients", s, "floor",
            extra=f"{constant} of the {channels} channels constant (a blank mask)" if constant else "")
    r = add_row(report, times, "ours", f"{label}: ours, one target", s, "floor", "≤ 1.10× floor; ≤ 0.90× "
                "pytorch-grad-cam's")
    if "pgc4" in times:
        times["pgc1"] = [runs[0] for runs in pgc_runs]
        speed = paired(times, "ours", "pgc1")
        r.extra = f"{speed:.2f}× pytorch-grad-cam's time"
        r.ok = r.ratio <= 1.10 and speed <= 0.90
        add_row(report, times, "pgc1", f"{label}: pytorch-grad-cam ScoreCAM, one target (its batches of 16)", s,
                "floor")
    else:
        r.ok = r.ratio <= 1.10
    r = add_row(report, times, "ours4", f"{label}: ours, 4 targets in one call", s, "floor",
                "≤ 0.30× pytorch-grad-cam's 4 runs")
    r.extra = f"{paired(times, 'ours4', 'ours'):.2f}× ours for one target"
    if "pgc4" in times:
        speed = paired(times, "ours4", "pgc4")
        r.extra += f"; {speed:.2f}× pytorch-grad-cam's 4 runs"
        r.ok = speed <= 0.30
        add_row(report, times, "pgc4", f"{label}: pytorch-grad-cam ScoreCAM, 4 runs (one per target)", s, "floor")
    memory_row(report, s, n, "scorecam", ours_probe, theirs_probe, "≤ 1.5× pytorch-grad-cam's peak", 1.5)
    return ok


# --------------------------------------------------------------------------------------------------
# 3. Ablation-CAM


def ablation_rows(n: Net, rounds: int, cache: Path, image: Path, threads: int, report: Report,
                  lines: list[str]) -> bool:
    from gradcam_core.engine import explain

    s = SECTION_ABLATION
    label = f"{n.what} (`{n.layer}`)"
    if "ablationcam" not in registered():
        skipped(report, f"{label}: ours, Ablation-CAM, one target", s, ["ablationcam"],
                "≤ 0.50× pytorch-grad-cam's")
        return True
    ours_probe, theirs_probe, ok = probes(n, "ablationcam", cache, image, n.x.shape[-1], threads, lines)
    v: dict[str, Callable[[], object]] = {
        "floor": common.floor_of(n.net, n.x),
        "ours": lambda: explain(n.net, n.x, n.layer, [CLASS], guided=False, method="ablationcam"),
    }
    if theirs_probe is not None:
        v["pgc"] = lambda: pgc_map("ablationcam", n)
    print(f"{label} Ablation-CAM: timing {len(v)} variants, {rounds} round(s), no warm-up ...", flush=True)
    times = timed_rounds(v, rounds, warmup=False, after=lambda: n.net.zero_grad(set_to_none=True))
    add_row(report, times, "floor", f"{label}: floor, 1 forward + 1 backward to the input", s, "floor")
    r = add_row(report, times, "ours", f"{label}: ours, Ablation-CAM, one target", s, "floor",
                "≤ 0.50× pytorch-grad-cam's")
    if "pgc" in times:
        speed = paired(times, "ours", "pgc")
        r.extra, r.ok = f"{speed:.3f}× pytorch-grad-cam's time", speed <= 0.50
        add_row(report, times, "pgc", f"{label}: pytorch-grad-cam AblationCAM, one target (its batches of 32)",
                s, "floor")
    memory_row(report, s, n, "ablationcam", ours_probe, theirs_probe)
    return ok


# --------------------------------------------------------------------------------------------------
# 4. The CLI's default guided path


def guided_rows(n: Net, rounds: int, calls: int, report: Report, also: str = "") -> None:
    """The floor, ours at the net's layer (and at ``also``, where given), with ``torch7_ties=False``
    and Grad-CAM alone, interleaved; each sample the mean of ``calls`` back-to-back calls."""
    from gradcam_core.engine import explain

    v: dict[str, Callable[[], object]] = {
        "floor": common.floor_of(n.net, n.x),
        "ours": lambda: explain(n.net, n.x, n.layer, [CLASS]),
        "fast": lambda: explain(n.net, n.x, n.layer, [CLASS], torch7_ties=False),
        "cam": lambda: explain(n.net, n.x, n.layer, [CLASS], guided=False),
    }
    if also:
        v["also"] = lambda: explain(n.net, n.x, also, [CLASS])
    if calls > 1:
        v = {k: (lambda fn=fn: [fn() for _ in range(calls)]) for k, fn in v.items()}
    print(f"{n.what} guided path: timing {len(v)} variants, {rounds} rounds of {calls} call(s) ...", flush=True)
    times = timed_rounds(v, rounds, warmup=True)
    times = {k: [t / calls for t in ts] for k, ts in times.items()}
    s = SECTION_GUIDED
    label = f"{n.what} (`{n.layer}`)"
    add_row(report, times, "floor", f"{label}: floor, 1 forward + 1 backward to the input", s, "floor")
    add_row(report, times, "ours", f"{label}: ours, `explain(net, x, layer, [c])` (the CLI's default; "
            "torch7_ties as the model says)", s, "floor", "≤ 1.15× floor", 1.15,
            extra=f"over the floor: {1000 * (statistics.median(times['ours']) - statistics.median(times['floor'])):.1f} ms")
    add_row(report, times, "fast", f"{label}: same with `torch7_ties=False` (extra row)", s, "floor")
    add_row(report, times, "cam", f"{label}: Grad-CAM alone (`guided=False`, extra row)", s, "floor")
    if also:
        add_row(report, times, "also", f"{n.what} (`{also}`, the CLI's default layer for it): ours, the same call",
                s, "floor", "≤ 1.15× floor", 1.15)


# --------------------------------------------------------------------------------------------------


def methods_run(cache: Path, image: Path, repeats: int, scorecam_rounds: int, threads: int, report: Report,
                header: list[str]) -> bool:
    """Every row of this module (see its docstring). Returns whether the maps agree with
    pytorch-grad-cam's; ``header`` gets the section's lines for the report's header."""
    names = registered()
    lines: list[str] = []
    ok = True
    if "pytorch_grad_cam" not in sys.modules:
        with contextlib.suppress(ImportError):
            import pytorch_grad_cam  # noqa: F401
    started = load_average()
    first_row = len(report.rows)

    vgg = load_net("vgg16", cache, image)
    ok &= gradient_rows(vgg, names, repeats, report, lines)
    guided_rows(vgg, repeats, 1, report)
    resnet = load_net("resnet50", cache, image)
    ok &= gradient_rows(resnet, names, repeats, report, lines)
    squeeze = load_net("squeezenet", cache, image)
    guided_rows(squeeze, max(4 * repeats, 8), 3, report, also="relu_conv10")

    ok &= ablation_rows(vgg, scorecam_rounds, cache, image, threads, report, lines)
    ok &= ablation_rows(resnet, scorecam_rounds, cache, image, threads, report, lines)
    del resnet
    ok &= scorecam_rows(squeeze, 3 * scorecam_rounds, cache, image, threads, report, lines)
    ok &= scorecam_rows(vgg, scorecam_rounds, cache, image, threads, report, lines)

    mine = report.rows[first_row:]  # one block per section, in SECTIONS' order
    mine.sort(key=lambda r: SECTIONS.index(r.section))
    report.rows[first_row:] = mine
    from gradcam_core.engine.methods import lookup

    plain = [m for m in (*GRADIENT_METHODS, EIGENGRAD) if m in names and not lookup(m).uses_gradients]
    if plain:  # the rows call them gradient methods
        report.notes.append(f"Registered without gradients (uses_gradients False): {', '.join(plain)}.")
    missing = [m for m in (*GRADIENT_METHODS, EIGENGRAD, "eigencam", "scorecam", "ablationcam") if m not in names]
    header.append(
        f"- CAM methods (`--only methods`): {NET_LINES['vgg16']}; {NET_LINES['resnet50']}; {NET_LINES['squeezenet']}; "
        f"input 1×3×224×224 ({image.name}), class {CLASS} "
        f"(0-based), 4 targets {CLASSES_K4}; gradient and guided rows: {repeats} rounds after a warm-up round "
        f"(SqueezeNet's guided rows: {max(4 * repeats, 8)} rounds of 3 calls); Score-CAM and Ablation-CAM: "
        f"{scorecam_rounds} round(s) without warm-up on VGG-16 and ResNet-50, {3 * scorecam_rounds} on "
        f"SqueezeNet (`--scorecam-rounds {scorecam_rounds}`); methods registered: {', '.join(names)}"
        + (f"; not registered yet (skipped rows): {', '.join(missing)}" if missing else "")
        + f"; load average at the section's start {started}, end {load_average()}")
    if lines:
        report.notes.append("CAM methods' maps against pytorch-grad-cam's (checked before timing; both min-max "
                            f"normalised, ours cv2-resized; agree: max abs. diff ≤ {AGREE:g}):\n"
                            + "\n".join("    " + ln for ln in lines))
        print("\n".join(lines), flush=True)
    return ok


SECTIONS = [SECTION_GRAD, SECTION_GUIDED, SECTION_ABLATION, SECTION_SCORE]

__all__ = ["SECTIONS", "fmt_s", "methods_run", "probe"]
