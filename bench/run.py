#!/usr/bin/env python3
"""The speed benchmark: ours against the floor, Captum and pytorch-grad-cam, in ONE run.

    python bench/run.py                       # full run (about 10 minutes on 2 cores)
    python bench/run.py --repeats 9 --markdown bench/RESULTS.md
    python bench/run.py --quick               # smoke test: 2 repeats, 1 CLI run
    python bench/run.py --only web            # the web demo's rows alone (about a minute)
    python bench/run.py --only vit            # the ViT-B/16 Grad-CAM row alone (about a minute)

What it does:

1. Builds a full-size VGG-16 in the V1 caffemodel format (as the Oxford file is: same layers and
   sizes, random weights, 553 MB) into the cache folder (``--cache``, default ``bench/.cache``, which
   git ignores) unless it is already there.
2. In this process, on that net (``load_classifier``: the CLI's model, final Softmax removed), one
   image (``images/cat_dog.jpg`` preprocessed as the CLI does, 1x3x224x224), layer relu5_3,
   ``--threads`` torch threads: every variant once per round, rounds repeated (``--repeats``), so
   machine load hits every variant alike; medians are reported (and the fastest run), and every
   ratio (× floor, "ours N× faster") is the median over rounds of the ratio within a round, so
   that the machine's drift between rounds (30% within minutes here) cancels.
3. In fresh subprocesses: the caffemodel load against reading the file, the whole
   ``classification.py`` command against ``python -c "import torch"``, and a folder of 32 images.
4. The model formats (``--only formats`` runs these alone, in a few minutes): a Caffe ResNet-50 (the
   shared deploy prototxt, random weights written into the cache) and the bundled real SqueezeNet 1.1
   in its three forms (Caffe, torchvision state_dict, and an ONNX export of the torchvision one made
   into the cache), each loaded as the CLI loads it (``tasks.classify.load_model``) and fed its own
   preprocessing: Grad-CAM + guided against each net's own floor, interleaved; the ONNX-loaded net
   against its torchvision twin (same weights, same layer, same rounds); and the ResNet-50
   caffemodel's load as for VGG-16. A net the Caffe loader cannot build yet gets a "skipped" row.
5. The web demo (``--only web`` runs these alone, in about a minute): the real server started as a
   user starts it (``python -m gradcam_core.web -port 0``: the bundled Caffe SqueezeNet 1.1, its
   default layer) in a subprocess with ``--threads`` torch threads, and an httpx client here
   (bench/web_client.py) on one persistent connection. A warm request (``images/cat_dog.jpg``
   uploaded, label 243; from the upload to the JSON answer received and parsed) against the same
   Caffe SqueezeNet loaded here (``tasks.classify.load_model``) explaining the preloaded,
   preprocessed image (``explain_classes``), interleaved so that the server is idle while this
   process computes; beside them, in the same rounds, the server's other steps as it runs them
   (decode + preprocess, the five PNGs, base64 + JSON, the client's parse), to say where the time
   goes. On this shared machine another process's burst can make the in-process engine many times
   slower for seconds (its OpenMP threads spin for each other): when its median is over 1.5× its
   fastest run the rounds are done again (3 attempts at most, else the row is not judged). Then 4
   clients at once (threads, each on its own connection, M requests back to back) against one
   client sending the same 4·M requests, the two bursts alternated: throughput, latency
   percentiles, failed requests (anything but 200, a 503 included).
6. The CAM methods (``--only methods`` runs these alone; bench/cam_methods.py, whose docstring says how each
   row is measured): the gradient methods and Eigen-CAM against the floor on VGG-16 and a random-weight
   torchvision ResNet-50; Score-CAM against its own floor (one forward per channel) and pytorch-grad-cam's
   ``ScoreCAM`` on VGG-16 and the bundled SqueezeNet, with each call's peak memory in a fresh process;
   Ablation-CAM against pytorch-grad-cam's ``AblationCAM``; the CLI's default guided path against the floor.
   Score-CAM on VGG-16 is 512 forwards (minutes a call here): ``--scorecam-rounds`` (default 1).
7. Object detection (``--only detection``; bench/detection_row.py, whose docstring says what is timed):
   what detection.py computes for 5 boxes of a random-weight fasterrcnn_mobilenet_v3_large_fpn against
   one forward + backward of that detector.
8. The evaluation (``--only evaluate``; bench/evaluate_bench.py): ``gradcam-evaluate`` on the sample
   folder against the time of its maps alone.

The floor is one forward plus one backward to the input, nothing else::

    x = image.clone().requires_grad_()        # parameters frozen (requires_grad False)
    out = net(x)                              # PyTorch's default CPU kernels (oneDNN), NCHW
    torch.autograd.grad(out[0, c], x)

Peers are called as their documentation shows, on the same torch module, and only computed, not
rendered (ours likewise: ``explain`` returns the maps; PNG writing is in the CLI rows): Captum's
``LayerGradCam`` (+ ``LayerAttribution.interpolate`` to the input size) and ``GuidedGradCam``;
pytorch-grad-cam's ``GradCAM`` and its Guided Grad-CAM recipe from its ``cam.py`` (``GradCAM`` +
``GuidedBackpropReLUModel`` + the product). Parameters keep ``requires_grad`` as loaded for them
(pytorch-grad-cam then builds weight gradients, as it does for every user); their ``.grad`` is reset
to None between runs, outside the timing. Before timing, the maps are checked to agree.

Peers (captum, grad-cam, and the torchvision/opencv they pull in) are bench dependencies
(``pip install -e '.[bench]'``), never runtime ones.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import textwrap
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common import (
    CLASS,
    CLASSES_K4,
    GB,
    LAYER,
    MB,
    ROOT,
    SQUEEZENET,
    Report,
    Row,
    child_env,
    ensure_vgg16,
    floor_of,
    fmt_s,
    interleaved,
    load_average,
    run_child,
)

RESNET50_PROTO = ROOT / "tests" / "data" / "prototxts" / "ResNet-50-deploy.prototxt"
SECTION_RESNET = "model formats: Caffe ResNet-50 (shared deploy prototxt, random weights)"
SECTION_SQUEEZENET = "model formats: the real SqueezeNet 1.1 as Caffe, torchvision and ONNX"
SECTION_VIT = "transformers: torchvision ViT-B/16 (random weights), a token layer"
SECTION_WEB = "web demo: `python -m gradcam_core.web` (bundled SqueezeNet 1.1) over HTTP, against the engine here"


# --------------------------------------------------------------------------------------------------
# Results


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("PASS" if ok else "FAIL")


def table(report: Report) -> str:
    lines = [
        "| measurement | median (fastest) | × floor | other figures | target | result |",
        "|---|---|---|---|---|---|",
    ]
    section = None
    for r in report.rows:
        if r.section != section:
            section = r.section
            lines.append(f"| **{section}** | | | | | |")
        time_cell = fmt_s(r.seconds) if r.fastest is None else f"{fmt_s(r.seconds)} ({fmt_s(r.fastest)})"
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}"
        lines.append(f"| {r.what} | {time_cell} | {ratio} | {r.extra} | {r.target} | {verdict(r.ok)} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Machine, model, inputs


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def ensure_folder(cache: Path, n: int = 32) -> Path:
    """``n`` distinct JPEGs (flips and crops of the sample images) for the folder run."""
    from PIL import Image, ImageOps

    folder = cache / f"folder{n}"
    if folder.is_dir() and len(list(folder.glob("*.jpg"))) == n:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    sources = sorted((ROOT / "images").glob("*.jpg"))
    i = 0
    while i < n:
        for src in sources:
            if i == n:
                break
            with Image.open(src) as im:
                im = im.convert("RGB")
                v = i // len(sources)
                if v % 2:
                    im = ImageOps.mirror(im)
                w, h = im.size
                cut = (v // 2) * 0.04
                im = im.crop((int(w * cut), int(h * cut), w - int(w * cut / 2), h - int(h * cut / 2)))
                im.save(folder / f"img_{i:02d}.jpg", quality=92)
            i += 1
    return folder


# --------------------------------------------------------------------------------------------------
# Timing


# --------------------------------------------------------------------------------------------------
# Agreement of the maps


def restore_modules(net, modules: list) -> None:
    """Put the net's own modules back: pytorch-grad-cam's GuidedBackpropReLUModel swaps every nn.ReLU
    for one shared GuidedBackpropReLUasModule and then for one shared new nn.ReLU, so a hook on
    "relu5_3" would fire at every ReLU afterwards."""
    for i, m in enumerate(modules):
        if net.layers[i] is not m:
            net.layers[i] = m


def rel_err(a, b) -> float:
    import torch

    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def check_agreement(net, image, peers: dict, report: Report) -> bool:
    """Ours against Captum (up to the sum-vs-mean factor) and pytorch-grad-cam (after its
    normalisation), at the same numerics (``torch7_ties=False``: the oneDNN forward the peers run);
    and the default ``torch7_ties`` run against that."""
    import torch

    from gradcam_core.engine import explain

    x = image
    ours = explain(net, x, LAYER, [CLASS], torch7_ties=False)
    default = explain(net, x, LAYER, [CLASS])
    h, w = ours.cam_raw.shape[-2:]
    ok = True
    lines = []

    def line(text: str, good: bool) -> None:
        nonlocal ok
        ok &= good
        lines.append(f"{'ok  ' if good else 'BAD '} {text}")

    e = rel_err(default.cam_raw, ours.cam_raw)
    line(f"ours default (torch7_ties) vs ours torch7_ties=False, Grad-CAM: max rel. diff {e:.1e}", e < 1e-4)
    gd, gf = default.guided[0, 0], ours.guided[0, 0]
    corr = float(torch.corrcoef(torch.stack([gd.flatten(), gf.flatten()]).double())[0, 1])
    moved = float(((gd - gf).abs() > 1e-3 * gf.abs().max()).double().mean())
    line(f"ours default vs torch7_ties=False, guided backprop: correlation {corr:.4f}, "
         f"{moved:.2%} of the values differ (max-pool ties broken as Torch7 did)", corr > 0.9)

    if "captum" in peers:
        from captum.attr import GuidedBackprop, GuidedGradCam, LayerAttribution, LayerGradCam

        module = net.module_at(LAYER)
        lgc = LayerGradCam(net, module).attribute(x, target=CLASS, relu_attributions=True)
        e = rel_err(ours.cam_raw[:, 0], (h * w) * lgc[:, 0])
        line(f"Captum LayerGradCam x {h * w} (mean vs sum of gradients) vs ours Grad-CAM: max rel. diff {e:.1e}",
             e < 1e-4)
        gbp = GuidedBackprop(net).attribute(x.clone().requires_grad_(), target=CLASS)
        e = rel_err(ours.guided[:, 0], gbp)
        line(f"Captum GuidedBackprop vs ours guided backprop: max rel. diff {e:.1e}", e < 1e-4)
        ggc = GuidedGradCam(net, module).attribute(x, target=CLASS)
        mine = ours.guided[:, 0] * LayerAttribution.interpolate(ours.cam_raw[:, :1] / (h * w), x.shape[2:])
        e = rel_err(mine, ggc)
        line(f"Captum GuidedGradCam vs ours guided x Grad-CAM (Captum's nearest upsampling): max rel. diff {e:.1e}",
             e < 1e-4)
        net.zero_grad(set_to_none=True)

    if "pytorch_grad_cam" in peers:
        import cv2
        import numpy as np
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.guided_backprop import GuidedBackpropReLUModel
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        with GradCAM(model=net, target_layers=[net.module_at(LAYER)]) as cam:
            theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(CLASS)])[0]
        raw = ours.cam_raw[0, 0].numpy().astype(np.float64)
        raw = raw - raw.min()
        raw = raw / (1e-7 + raw.max())
        mine = cv2.resize(np.float32(raw), (x.shape[-1], x.shape[-2]))
        e = float(np.abs(mine - theirs).max())
        line(f"pytorch-grad-cam GradCAM vs ours Grad-CAM, both min-max normalised and resized by cv2: "
             f"max abs. diff {e:.1e}", e < 1e-4)
        modules = list(net.layers)
        gb = GuidedBackpropReLUModel(model=net, device="cpu")(x.clone(), target_category=CLASS)
        restore_modules(net, modules)
        e = rel_err(ours.guided[0, 0].permute(1, 2, 0), torch.from_numpy(gb))
        line(f"pytorch-grad-cam GuidedBackpropReLUModel vs ours guided backprop: max rel. diff {e:.1e}", e < 1e-4)
        net.zero_grad(set_to_none=True)

    report.notes.append("Maps agree (checked before timing, same image and class):\n" +
                        "\n".join("    " + ln for ln in lines))
    print("\n".join(lines), flush=True)
    return ok


# --------------------------------------------------------------------------------------------------
# The in-process race


def race(net, image, batch8, peers: dict, repeats: int, report: Report) -> float:
    from gradcam_core.engine import explain

    floor = floor_of(net, image)
    v: dict[str, Callable[[], object]] = {
        "floor": floor,
        "ours_cam": lambda: explain(net, image, LAYER, [CLASS], guided=False),
        "ours_guided": lambda: explain(net, image, LAYER, [CLASS]),
        "ours_guided_fast": lambda: explain(net, image, LAYER, [CLASS], torch7_ties=False),
        "ours_cam_k4": lambda: explain(net, image, LAYER, CLASSES_K4, guided=False),
        "ours_guided_k4": lambda: explain(net, image, LAYER, CLASSES_K4),
        "ours_batch8": lambda: explain(net, batch8, LAYER, [CLASS]),
    }
    if "captum" in peers:
        from captum.attr import GuidedGradCam, LayerAttribution, LayerGradCam

        def captum_lgc(target: int = CLASS) -> None:
            attr = LayerGradCam(net, net.module_at(LAYER)).attribute(image, target=target, relu_attributions=True)
            LayerAttribution.interpolate(attr, tuple(image.shape[2:]))

        def captum_ggc(target: int = CLASS) -> None:
            GuidedGradCam(net, net.module_at(LAYER)).attribute(image, target=target)

        v["captum_lgc"] = captum_lgc
        v["captum_ggc"] = captum_ggc
        v["captum_lgc_k4"] = lambda: [captum_lgc(t) for t in CLASSES_K4]
        v["captum_ggc_k4"] = lambda: [captum_ggc(t) for t in CLASSES_K4]
    if "pytorch_grad_cam" in peers:
        import numpy as np
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.guided_backprop import GuidedBackpropReLUModel
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        def pgc_gradcam(target: int = CLASS):
            with GradCAM(model=net, target_layers=[net.module_at(LAYER)]) as cam:
                return cam(input_tensor=image, targets=[ClassifierOutputTarget(target)])[0]

        modules = list(net.layers)

        def pgc_recipe(target: int = CLASS) -> None:  # cam.py: GradCAM, then GuidedBackpropReLUModel
            grayscale = pgc_gradcam(target)
            gb = GuidedBackpropReLUModel(model=net, device="cpu")(image.clone(), target_category=target)
            restore_modules(net, modules)  # it leaves ONE nn.ReLU instance at every ReLU position
            np.stack([grayscale] * 3, axis=-1) * gb  # cam.py: cv2.merge([cam] * 3) * gb

        v["pgc_gradcam"] = pgc_gradcam
        v["pgc_recipe"] = pgc_recipe
        v["pgc_gradcam_k4"] = lambda: [pgc_gradcam(t) for t in CLASSES_K4]
        v["pgc_recipe_k4"] = lambda: [pgc_recipe(t) for t in CLASSES_K4]

    print(f"timing {len(v)} variants, {repeats} interleaved rounds ...", flush=True)
    times = interleaved(v, repeats, after=lambda: net.zero_grad(set_to_none=True))
    med = {k: statistics.median(t) for k, t in times.items()}
    best = {k: min(t) for k, t in times.items()}
    fl = med["floor"]

    def paired(a: str, b: str) -> float:
        """The median over rounds of time(a) / time(b) in the same round: the variants of a round run
        back to back, so the ratio cancels the machine's drift between rounds."""
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    def row(key: str, what: str, section: str, per: int = 1, **kw) -> Row | None:
        if key not in med:
            report.add(Row(what, section=section, extra="not installed"))
            return None
        return report.add(Row(what, med[key] / per, best[key] / per, paired(key, "floor") / per, section=section, **kw))

    s1 = "one image, one target"
    row("floor", "floor: 1 forward + 1 backward to the input", s1)
    r = row("ours_cam", "ours: Grad-CAM alone", s1, target="≤ 0.70× floor")
    r.ok = r.ratio <= 0.70
    r = row("ours_guided", "ours: Grad-CAM + guided backprop + guided Grad-CAM (CLI default)", s1,
            target="≤ 1.25× floor")
    r.ok = r.ratio <= 1.25
    row("ours_guided_fast", "ours: same with `torch7_ties=False` (extra row: oneDNN forward, max-pool "
        "ties not broken as Torch7 did; not what the CLI runs)", s1)
    row("captum_lgc", "Captum LayerGradCam", s1)
    r = row("captum_ggc", "Captum GuidedGradCam", s1, target="ours ≥ 1.4× faster")
    if r:
        speedup = paired("captum_ggc", "ours_guided")
        r.extra, r.ok = (f"ours {speedup:.2f}× faster (torch7_ties=False: {paired('captum_ggc', 'ours_guided_fast'):.2f}×); "
                         f"bound for any guided method: {r.ratio:.2f}× (the floor itself)"), speedup >= 1.4
    row("pgc_gradcam", "pytorch-grad-cam GradCAM", s1)
    r = row("pgc_recipe", "pytorch-grad-cam Guided Grad-CAM recipe (GradCAM + GuidedBackpropReLUModel)", s1,
            target="ours ≥ 5× faster")
    if r:
        speedup = paired("pgc_recipe", "ours_guided")
        r.extra, r.ok = (f"ours {speedup:.1f}× faster (torch7_ties=False: {paired('pgc_recipe', 'ours_guided_fast'):.1f}×); "
                         f"bound for any guided method: {r.ratio:.1f}× (the floor itself)"), speedup >= 5

    s4 = "k = 4 targets, one image (ours: one call; peers: 4 runs)"
    r = row("ours_cam_k4", "ours: Grad-CAM alone, 4 targets in one call", s4, target="≤ 0.85× floor")
    r.ok = r.ratio <= 0.85
    for key, what in (("captum_lgc_k4", "Captum LayerGradCam × 4"), ("pgc_gradcam_k4", "pytorch-grad-cam GradCAM × 4")):
        r = row(key, what, s4)
        if r:
            r.extra = f"ours {paired(key, 'ours_cam_k4'):.1f}× faster"
    row("ours_guided_k4", "ours: Grad-CAM + guided, 4 targets in one call", s4)
    for key, what in (("captum_ggc_k4", "Captum GuidedGradCam × 4"), ("pgc_recipe_k4", "pytorch-grad-cam recipe × 4")):
        r = row(key, what, s4)
        if r:
            r.extra = f"ours {paired(key, 'ours_guided_k4'):.1f}× faster"

    sb = "batches (per image, against the one-image floor)"
    row("ours_batch8", "ours: batch of 8 images, Grad-CAM + guided, per image", sb, per=8)
    return fl


# --------------------------------------------------------------------------------------------------
# Folder of 32 images


def folder_run(proto: Path, model: Path, folder: Path, image: Path, floor_now: Callable[[], float],
               repeats: int, threads: int, report: Report, section: str) -> None:
    """The whole CLI on a folder of n images, against the single-image floor.

    Each round measures, side by side (this machine's speed drifts by 30% within minutes): the floor
    in this process (median of 3), the one-image command, and the folder command. Two rows: the wall
    time per image (start-up and model load included: about 3.5 s, 0.2x the floor per image at n = 32,
    measured on its own by the whole-command row), and the time per image in the run,
    (T(n) - T(1 image)) / (n - 1): the steady-state cost of one more image, which the target applies to.
    """
    n = len(list(folder.glob("*.jpg")))
    env = child_env(threads)
    per_image, marginal, walls, peaks = [], [], [], []
    for i in range(repeats):
        floor = floor_now()
        with tempfile.TemporaryDirectory(dir=folder.parent) as out:
            common = [str(ROOT / "classification.py"), "-proto_file", str(proto), "-model_file", str(model),
                      "-batch_size", "8"]
            one, _, code1, _, err1 = run_child([*common, "-input_image_path", str(image), "-out_path",
                                                out + "/one/"], ROOT, env)
            wall, peak, code, _, err = run_child([*common, "-input_image_path", str(folder), "-out_path",
                                                  out + "/all/"], ROOT, env)
            written = len(list(Path(out, "all").rglob("*.png")))
        if code or code1:
            report.add(Row(f"folder of {n}: classification.py -batch_size 8", section=section,
                           extra=f"failed (exit {code or code1}): {(err or err1).strip().splitlines()[-1:]}"))
            return
        walls.append(wall)
        peaks.append(peak)
        per_image.append(wall / n / floor)
        marginal.append((wall - one) / (n - 1) / floor)
        print(f"  folder run {i + 1}/{repeats}: floor {floor * 1e3:.0f} ms, one image {one:.1f} s, "
              f"{n} images {wall:.1f} s, {written} PNGs", flush=True)
    wall = statistics.median(walls)
    report.add(Row(f"folder of {n} images: whole `classification.py -input_image_path <folder> "
                   f"-batch_size 8` (start-up and model load included), per image",
                   wall / n, min(walls) / n, statistics.median(per_image), section=section,
                   extra=f"total {wall:.1f} s, peak {statistics.median(peaks) / GB:.2f} GB, {written} PNGs"))
    ratio = statistics.median(marginal)
    r = report.add(Row(f"folder of {n}: time per image in the run, (T({n}) − T(1 image)) / {n - 1}, "
                       "each round against the floor measured beside it",
                       None, None, ratio, section=section, target="≤ 1.30× floor"))
    r.ok = ratio <= 1.30


# --------------------------------------------------------------------------------------------------
# Caffemodel load, whole command


LOAD_PROBE = textwrap.dedent("""
    import json, re, sys, time
    import numpy as np
    import torch
    from gradcam_core.caffe import load_caffe
    proto, model = sys.argv[1], sys.argv[2]
    torch.set_num_threads(int(sys.argv[3]))
    read_threads = int(sys.argv[4])

    def status(key):
        return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024

    def reset_peak():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    def read_file():  # the bytes into fresh memory, as any loader must at least do
        with open(model, "rb", buffering=0) as f:
            size = f.seek(0, 2)
            f.seek(0)
            buf = np.empty(size, np.uint8)
            view, done = memoryview(buf), 0
            while done < size:
                done += f.readinto(view[done:])
        return buf

    read_file()  # warm the page cache
    reset_peak(); base = status("VmRSS"); t0 = time.perf_counter()
    net = load_caffe(proto, model)
    # and one read of every weight: packed blobs are mapped from the page cache, not copied, so the
    # pages' first use (mapping them in) is counted here rather than in the first forward
    if read_threads != torch.get_num_threads():
        torch.set_num_threads(read_threads)
    for p in net.parameters():
        p.detach().sum()
    load, peak_load = time.perf_counter() - t0, status("VmHWM") - base
    torch.set_num_threads(int(sys.argv[3]))
    del net
    reset_peak(); base = status("VmRSS"); t0 = time.perf_counter()
    buf = read_file()
    read, peak_read = time.perf_counter() - t0, status("VmHWM") - base
    print(json.dumps({"load": load, "peak_load": peak_load, "read": read, "peak_read": peak_read}))
""")


def load_run(proto: Path, model: Path, repeats: int, threads: int, report: Report, section: str,
             label: str = "V1 caffemodel", peak_target: bool = True, read_threads: int | None = None) -> None:
    """Each repeat in a fresh interpreter: load_caffe first (its peak over the baseline after imports),
    then, for comparison, reading the file into fresh memory. ``label`` names the file in the rows;
    without ``peak_target`` the peak is a figure of the load row, not a row with a target.
    ``read_threads`` (default ``threads``): torch threads for the read of every weight after the load
    (one ``sum`` per parameter tensor; with many tensors, as ResNet-50's 161, each multi-threaded sum
    waits for its OpenMP team, which on a loaded machine costs milliseconds a tensor: more than the
    load itself)."""
    size = model.stat().st_size
    res: dict[str, list[float]] = {"load": [], "peak_load": [], "read": [], "peak_read": []}
    for _ in range(repeats):
        cmd = ["-c", LOAD_PROBE, str(proto), str(model), str(threads), str(read_threads or threads)]
        _, _, code, out, err = run_child(cmd, ROOT, child_env(threads))
        if code != 0:
            report.add(Row(f"`load_caffe` of the {label}", section=section,
                           extra=f"probe failed: {err.strip()[-300:]}"))
            return
        for key, value in json.loads(out.strip().splitlines()[-1]).items():
            res[key].append(value)
    load, read = statistics.median(res["load"]), statistics.median(res["read"])
    peak = statistics.median(res["peak_load"])
    r = report.add(Row(f"`load_caffe` of the {size / MB:.0f} MB {label} (page cache warm), then one read "
                       "of every weight" + (f" ({read_threads} torch thread{'s' if read_threads > 1 else ''})"
                                            if read_threads and read_threads != threads else ""), load,
                       min(res["load"]), section=section, target="≥ 1 GB/s",
                       extra=f"{size / load / GB:.2f} GB/s; reading the file into fresh memory: "
                             f"{fmt_s(read)} = {size / read / GB:.2f} GB/s"
                             + ("" if peak_target else f"; peak RSS over the baseline {peak / MB:.0f} MB "
                                f"= {peak / size:.2f}× the file")))
    r.ok = size / load >= GB
    if not peak_target:
        return
    r = report.add(Row("`load_caffe` peak RSS over the interpreter's baseline (fresh subprocess; the mapped "
                       "file's pages count)", section=section,
                       target="≤ 1.5× file size",
                       extra=f"{peak / MB:.0f} MB = {peak / size:.2f}× the file "
                             f"(reading it: {statistics.median(res['peak_read']) / MB:.0f} MB)"))
    r.ok = peak <= 1.5 * size


def cli_run(proto: Path, model: Path, image: Path, repeats: int, threads: int, report: Report,
            section: str) -> float | None:
    env = child_env(threads)
    runs = {"torch": [], "cli": []}
    with tempfile.TemporaryDirectory() as out:
        cmds = {
            "torch": ["-c", "import torch"],
            "cli": [str(ROOT / "classification.py"), "-proto_file", str(proto), "-model_file",
                    str(model), "-input_image_path", str(image), "-out_path", out + "/"],
        }
        for i in range(repeats + 1):  # the first round warms the page cache and is not counted
            for key, cmd in cmds.items():
                wall, peak, code, _, err = run_child(cmd, ROOT, env)
                if code != 0:
                    report.add(Row(f"`python {cmd[0]}`", section=section,
                                   extra=f"failed (exit {code}): {err.strip()[-300:]}"))
                    return None
                if i:
                    runs[key].append((wall, peak))
            if i:
                print(f"  CLI round {i}/{repeats}: import torch {runs['torch'][-1][0]:.2f} s, "
                      f"classification.py {runs['cli'][-1][0]:.2f} s", flush=True)
    t_torch = statistics.median(w for w, _ in runs["torch"])
    t_cli = statistics.median(w for w, _ in runs["cli"])
    p_torch = statistics.median(p for _, p in runs["torch"])
    p_cli = statistics.median(p for _, p in runs["cli"])
    # the median of the differences within a round (the two commands run back to back)
    extra = statistics.median(c - t for (c, _), (t, _) in zip(runs["cli"], runs["torch"]))
    report.add(Row('`python -c "import torch"`', t_torch, min(w for w, _ in runs["torch"]), section=section,
                   extra=f"peak {p_torch / GB:.2f} GB"))
    r = report.add(Row("`python classification.py` on the full-size VGG-16 (default options, one image, 3 PNGs)",
                       t_cli, min(w for w, _ in runs["cli"]), section=section,
                       target="≤ import torch + 1.5 s; peak ≤ 1.5 GB",
                       extra=f"import torch + {extra:.2f} s; peak {p_cli / GB:.2f} GB"))
    r.ok = extra <= 1.5 and p_cli <= 1.5 * GB
    return t_cli


# --------------------------------------------------------------------------------------------------
# Model formats: a Caffe ResNet-50 and the real SqueezeNet 1.1 in three forms


def random_weights(proto: Path, seed: int = 0) -> list[dict]:
    """Random parameter blobs for the layers of a deploy prototxt, as layer dicts for
    :func:`caffe_writer.write_caffemodel` (tests/caffe_writer.py), in the shapes the package's own
    builders plan for them (:func:`gradcam_core.formats.caffe.planned_blobs`: the bottoms' shapes
    followed through the net as ``load_caffe`` follows them). Convolution and InnerProduct: He-normal
    weights (fan-in: all but the first axis; std sqrt(2 / fan-in) and sqrt(1 / fan-in)), small
    biases; BatchNorm: mean, variance of a unit normal and factor 1; Scale: weights near 1, small
    biases. Layer types with blobs that this benchmark's nets do not use raise ValueError."""
    import math

    import numpy as np

    from gradcam_core.formats.caffe import planned_blobs

    rng = np.random.default_rng(seed)

    def normal(shape: tuple[int, ...], std: float) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)

    layers = []
    for spec, shapes in planned_blobs(proto):
        if any(None in shape for shape in shapes):
            raise ValueError(f"{proto}: layer '{spec.name}' has a blob of unknown size")
        sizes = [tuple(shape) for shape in shapes]
        blobs: list[np.ndarray] = []
        if spec.type in ("Convolution", "InnerProduct"):
            weight = sizes[0]
            gain = 2.0 if spec.type == "Convolution" else 1.0
            blobs.append(normal(weight, math.sqrt(gain / math.prod(weight[1:]))))
            blobs += [normal(bias, 0.01) for bias in sizes[1:]]
        elif spec.type == "BatchNorm":
            mean, var, factor = sizes
            blobs += [normal(mean, 0.1), (1 + np.abs(normal(var, 0.1))).astype(np.float32),
                      np.ones(factor, np.float32)]
        elif spec.type == "Scale":
            blobs.append((1 + normal(sizes[0], 0.1)).astype(np.float32))
            blobs += [normal(bias, 0.01) for bias in sizes[1:]]
        else:
            raise ValueError(f"{proto}: layer '{spec.name}' has type {spec.type}, which random_weights "
                             "does not know")
        layers.append({"name": spec.name, "type": spec.type, "blobs": blobs})
    return layers


def ensure_resnet50(cache: Path) -> tuple[Path, Path]:
    """The shared ResNet-50 deploy prototxt and a V2 caffemodel of random weights for it
    (``cache/resnet50``, written once)."""
    from caffe_writer import write_caffemodel

    folder = cache / "resnet50"
    model = folder / "ResNet-50-random.caffemodel"
    stamp = folder / "ResNet-50-random.source"  # the prototxt's size and mtime the weights were made for
    source = f"{RESNET50_PROTO.stat().st_size} {RESNET50_PROTO.stat().st_mtime_ns}"
    if model.is_file() and stamp.is_file() and stamp.read_text() == source:
        return RESNET50_PROTO, model
    print(f"writing a random-weight ResNet-50 caffemodel into {folder} ...", flush=True)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"tmp-{os.getpid()}.caffemodel"
    write_caffemodel(tmp, random_weights(RESNET50_PROTO), name="ResNet-50")
    os.replace(tmp, model)
    stamp.write_text(source)
    return RESNET50_PROTO, model


def ensure_squeezenet_onnx(cache: Path) -> Path:
    """The bundled torchvision SqueezeNet 1.1 exported to ONNX (TorchScript exporter, dynamic batch
    axis) into ``cache/squeezenet1_1``; redone when the state_dict is newer than the export."""
    import torch

    from gradcam_core.formats.torchvision import load_torchvision

    pth = SQUEEZENET / "squeezenet1_1.pth"
    out = cache / "squeezenet1_1" / "squeezenet1_1.onnx"
    if out.is_file() and out.stat().st_mtime_ns >= pth.stat().st_mtime_ns:
        return out
    print(f"exporting the torchvision SqueezeNet 1.1 to {out} ...", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"tmp-{os.getpid()}.onnx")
    net = load_torchvision("squeezenet1_1", pth)
    torch.onnx.export(net, (torch.zeros(1, 3, 224, 224),), str(tmp), dynamo=False,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    os.replace(tmp, out)
    return out


def squeezenet_rounds(repeats: int) -> int:
    """Interleaved rounds for the SqueezeNet forms (``--repeats`` is sized for VGG-16's calls)."""
    return max(4 * repeats, 8)


@dataclass
class Form:
    """One loaded form of a net for the format rows."""

    key: str  # variant prefix
    what: str  # how the rows name it
    net: object = None
    x: object = None  # (1, 3, 224, 224), the form's own preprocessing
    layer: str = ""
    skipped: str = ""  # why it is not measured


def load_form(key: str, what: str, net_name: str, load: Callable[[], object], image: Path,
              layer: Callable[[object], str]) -> Form:
    """Load a classifier (``tasks.classify.load_model``'s Classifier) and its input; a model the
    loaders refuse (GradCamError: e.g. a Caffe layer type without a builder yet) is a skipped form."""
    from gradcam_core.errors import GradCamError
    from gradcam_core.image.preprocessing import load_input

    try:
        clf = load()
    except GradCamError as err:
        print(f"{net_name}, {what}: cannot load it ({err})", flush=True)
        reason = str(err).split(" (supported:")[0]  # the loader's list of supported types is long
        loader = what.split()[0]
        return Form(key, what, skipped=f"skipped: the {loader} loader cannot build {net_name} yet ({reason})")
    return Form(key, what, clf.net, load_input(image, 224, 224, clf.preprocessing)[None], layer(clf.net))


def formats_run(cache: Path, image: Path, repeats: int, cli_repeats: int, threads: int, report: Report) -> bool:
    """The model-format rows (see the module docstring, item 4). Returns whether the maps of the
    forms that loaded agree."""
    from gradcam_core.engine import explain
    from gradcam_core.tasks.classify import load_model

    rn_proto, rn_model = ensure_resnet50(cache)
    onnx_file = ensure_squeezenet_onnx(cache)
    sq = SQUEEZENET
    resnet = load_form("rn", "Caffe (shared prototxt + random-weight caffemodel)", "ResNet-50",
                       lambda: load_model(rn_model, proto_file=rn_proto), image, lambda net: "res5c_relu")
    forms = [
        load_form("caffe", "Caffe (deploy.prototxt + squeezenet1_1.caffemodel)", "SqueezeNet 1.1",
                  lambda: load_model(sq / "squeezenet1_1.caffemodel", proto_file=sq / "deploy.prototxt"), image,
                  lambda net: "fire9/concat"),
        load_form("tv", "torchvision (squeezenet1_1.pth)", "SqueezeNet 1.1",
                  lambda: load_model(sq / "squeezenet1_1.pth", arch="squeezenet1_1"), image,
                  lambda net: "features"),
        load_form("onnx", "ONNX (export of the torchvision net)", "SqueezeNet 1.1",
                  lambda: load_model(onnx_file), image,
                  lambda net: [n for n in net.layer_names  # the last fire module's Concat node
                               if n.startswith("/features/") and n.endswith("/Concat")][-1]),
    ]
    by_key = {f.key: f for f in forms}

    # The forms compute the same function of the image: check it before timing.
    ok, lines = True, []
    tv, on, cf = by_key["tv"], by_key["onnx"], by_key["caffe"]
    if not tv.skipped:
        ref = explain(tv.net, tv.x, tv.layer, [CLASS])
        for other, guided in ((on, True), (cf, False)):  # Caffe's input is on another scale: no guided check
            if other.skipped:
                continue
            theirs = explain(other.net, other.x, other.layer, [CLASS])
            e = rel_err(theirs.cam_raw, ref.cam_raw)
            good = e < 1e-4
            text = (f"SqueezeNet {other.key} at {other.layer} vs torchvision at {tv.layer}, Grad-CAM: "
                    f"max rel. diff {e:.1e}")
            if guided:
                g = rel_err(theirs.guided, ref.guided)
                good &= g < 1e-4
                text += f"; guided backprop: {g:.1e}"
            ok &= good
            lines.append(f"{'ok  ' if good else 'BAD '} {text}")
    if lines:
        report.notes.append(f"Model-format maps agree (checked before timing, {image.name}, class {CLASS}):\n"
                            + "\n".join("    " + ln for ln in lines))
        print("\n".join(lines), flush=True)

    def race_forms(forms: list[Form], rounds: int, calls: int = 1) -> dict[str, list[float]]:
        """Interleaved rounds of every form's floor and ours (and, for a Caffe net, ours with
        ``torch7_ties=False``); each sample is the mean of ``calls`` back-to-back calls."""
        v: dict[str, Callable[[], object]] = {}
        for f in forms:
            if f.skipped:
                continue
            v[f"{f.key}_floor"] = floor_of(f.net, f.x)
            v[f"{f.key}_ours"] = (lambda f=f: explain(f.net, f.x, f.layer, [CLASS]))
            if f.what.startswith("Caffe"):
                v[f"{f.key}_fast"] = (lambda f=f: explain(f.net, f.x, f.layer, [CLASS], torch7_ties=False))
        if not v:
            return {}
        if calls > 1:
            v = {k: (lambda fn=fn: [fn() for _ in range(calls)]) for k, fn in v.items()}
        print(f"timing {len(v)} variants, {rounds} interleaved rounds of {calls} call(s) each ...", flush=True)
        return {k: [t / calls for t in ts] for k, ts in interleaved(v, rounds).items()}

    def paired(times: dict[str, list[float]], a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    def rows_for(f: Form, times: dict[str, list[float]], section: str) -> None:
        if f.skipped:
            report.add(Row(f.what, section=section, extra=f.skipped[:300]))
            return
        fl, ours = times[f"{f.key}_floor"], times[f"{f.key}_ours"]
        report.add(Row(f"{f.what}: floor, 1 forward + 1 backward to the input",
                       statistics.median(fl), min(fl), 1.0, section=section))
        r = report.add(Row(f"{f.what}: ours, Grad-CAM + guided backprop + guided Grad-CAM "
                           f"(CLI default) at `{f.layer}`", statistics.median(ours), min(ours),
                           paired(times, f"{f.key}_ours", f"{f.key}_floor"), section=section,
                           target="≤ 1.15× floor"))
        r.ok = r.ratio <= 1.15
        if f"{f.key}_fast" in times:
            fast = times[f"{f.key}_fast"]
            report.add(Row(f"{f.what}: same with `torch7_ties=False` (extra row: oneDNN forward; not what the "
                           "CLI runs)", statistics.median(fast), min(fast),
                           paired(times, f"{f.key}_fast", f"{f.key}_floor"), section=section))

    # ResNet-50: its calls are long enough for --repeats rounds of one call; SqueezeNet's (a few tens
    # of ms unloaded) are more, each of 3 calls, so that its ratios are as steady.
    times = race_forms([resnet], repeats)
    rows_for(resnet, times, SECTION_RESNET)
    if resnet.skipped:
        report.add(Row("`load_caffe` of the ResNet-50 caffemodel", section=SECTION_RESNET,
                       extra="skipped: the Caffe loader cannot build ResNet-50 yet"))
    else:
        del resnet.net
        print("ResNet-50 caffemodel load ...", flush=True)
        load_run(rn_proto, rn_model, cli_repeats, threads, report, SECTION_RESNET,
                 label="V2 ResNet-50 caffemodel", peak_target=False, read_threads=1)

    times = race_forms(forms, squeezenet_rounds(repeats), calls=3)
    for f in forms:
        rows_for(f, times, SECTION_SQUEEZENET)
    r = report.add(Row("ONNX-loaded net against its torchvision twin: Grad-CAM + guided time "
                       "(same weights and layer, same rounds)", section=SECTION_SQUEEZENET,
                       target="≤ 1.10× torchvision"))
    if tv.skipped or on.skipped:
        r.extra = "skipped: " + ("the torchvision" if tv.skipped else "the ONNX") + " form did not load"
    else:
        ratio = paired(times, "onnx_ours", "tv_ours")
        r.extra = (f"{ratio:.2f}× the torchvision net's time (floors: "
                   f"{paired(times, 'onnx_floor', 'tv_floor'):.2f}×)")
        r.ok = ratio <= 1.10
    return ok


# --------------------------------------------------------------------------------------------------
# The web demo: a warm request against the engine in this process, and 4 clients at once


WEB_ATTEMPTS = 3  # the warm-request rounds are done again (at most this often) when the machine was busy:
WEB_BUSY = 1.5  # when the in-process engine's median is more than this × its fastest run


def web_rounds(repeats: int) -> int:
    """Interleaved rounds for the warm-request rows (SqueezeNet's calls are short, as for its format rows)."""
    return max(4 * repeats, 8)


def web_run(image: Path, repeats: int, threads: int, report: Report) -> bool:
    """The web demo rows (see the module docstring, item 5). Returns whether the server's PNGs are the
    ones the engine and renderer give in this process for the same image, model and layer."""
    import base64

    from gradcam_core.image.png import png_bytes
    from gradcam_core.image.preprocessing import load_rgb
    from gradcam_core.run import outputs
    from gradcam_core.tasks.classify import explain_classes, load_model

    section = SECTION_WEB
    try:
        import httpx

        sys.path.insert(0, str(ROOT / "bench"))
        from web_client import DemoServer, ExplainForm, burst, explain, percentile
    except ImportError as err:
        report.add(Row("web demo", section=section, extra=f"skipped: {err} (pip install -e '.[test]')"))
        return True
    from gradcam_core.web.demo import Result

    label = str(CLASS + 1)
    form = ExplainForm.of(image, label)
    clf = load_model(SQUEEZENET / "squeezenet1_1.caffemodel", proto_file=SQUEEZENET / "deploy.prototxt")
    net, prep = clf.net, clf.preprocessing
    rgb = load_rgb(image, 224, 224)
    x = prep.apply(rgb)[None]

    print("starting the web demo (python -m gradcam_core.web -port 0) ...", flush=True)
    try:
        server = DemoServer(env=child_env(threads), cwd=ROOT).__enter__()
    except RuntimeError as err:
        report.add(Row("web demo", section=section, extra=f"failed: {str(err)[:300]}"))
        return False
    try:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            layer = http.get("/api/config").json()["tasks"]["classification"]["default_layer"]
            for _ in range(3):  # warm: the first requests pay for lazy imports and first kernels
                status, body = explain(http, form)
            if status != 200 or body is None:
                report.add(Row("web demo: warm request", section=section,
                               extra=f"failed: HTTP {status} {(body or {}).get('error', '')}"))
                return False

            # The server's images are this process's engine and renderer on the same image and layer.
            expl, _ = explain_classes(net, x, layer, [CLASS])
            cam, guided = expl.cam[0, 0], expl.guided[0, 0]

            def render() -> list[bytes]:  # the server's five PNGs, as gradcam_core.web.demo renders them
                triplet = outputs.render_triplet("classify", label, cam, guided, heatmap=True)
                overlay = outputs.render_overlay("classify", label, cam, rgb)
                return [png_bytes(rgb), overlay.png, *(t.png for t in triplet)]

            mine = dict(zip(("input", "overlay", "gcam", "gb", "gb_gcam"), render()))
            theirs = {k: base64.b64decode(v.split(",", 1)[1]) for k, v in body["images"].items()}
            same = [k for k in mine if theirs.get(k) == mine[k]]
            agree = len(same) == len(mine) and body["layer"] == layer and body["target"]["label"] == CLASS + 1
            line = (f"{'ok  ' if agree else 'BAD '} web demo's PNGs ({', '.join(mine)}) for {image.name}, label "
                    f"{label}, layer {layer} vs this process's engine + renderer: "
                    + ("byte for byte equal" if len(same) == len(mine) else
                       f"differ: {', '.join(k for k in mine if k not in same)}"))
            report.notes.append("Web demo (checked before timing):\n    " + line)
            print(line, flush=True)

            result = Result("classification", layer, body["target"], body["predicted"], body["predictions"],
                            mine, body["files"], body["seconds"]["explain"])
            text = http.post("/api/explain", files=form.files(), data=dict(form.fields)).content
            served: dict[str, list[float]] = {"explain": [], "total": []}
            failures: list[str] = []

            def request() -> None:
                status, body = explain(http, form)
                if status != 200 or body is None:
                    failures.append(f"{status}: {(body or {}).get('error', '')}")
                    return
                served["explain"].append(body["seconds"]["explain"])
                served["total"].append(body["seconds"]["total"])

            def encode() -> bytes:  # Result.to_json (base64) + json.dumps as Starlette's JSONResponse does
                return json.dumps(result.to_json(), ensure_ascii=False, allow_nan=False, indent=None,
                                  separators=(",", ":")).encode("utf-8")

            calls = 3
            v: dict[str, Callable[[], object]] = {
                "request": request,
                "engine": lambda: explain_classes(net, x, layer, [CLASS]),
                "decode": lambda: prep.apply(load_rgb(image, 224, 224))[None],
                "render": render,
                "encode": encode,
                "parse": lambda: json.loads(text),
            }
            v = {k: (lambda fn=fn: [fn() for _ in range(calls)]) for k, fn in v.items()}
            rounds = web_rounds(repeats)
            for attempt in range(1, WEB_ATTEMPTS + 1):
                print(f"timing a warm request against the engine in this process: {rounds} interleaved rounds of "
                      f"{calls} calls of {len(v)} variants (attempt {attempt}) ...", flush=True)
                served["explain"].clear()
                served["total"].clear()
                times = {k: [t / calls for t in ts] for k, ts in interleaved(v, rounds).items()}
                for key in served:  # the warm-up round's answers are not counted
                    served[key] = served[key][calls:]
                busy = statistics.median(times["engine"]) > WEB_BUSY * min(times["engine"])
                if not busy:
                    break
                print(f"  the machine was busy (engine median {fmt_s(statistics.median(times['engine']))}, fastest "
                      f"{fmt_s(min(times['engine']))}): the rounds are done again", flush=True)

        med = {k: statistics.median(t) for k, t in times.items()}
        best = {k: min(t) for k, t in times.items()}
        ratio = statistics.median(a / b for a, b in zip(times["request"], times["engine"]))
        report.add(Row(f"in-process engine: `explain_classes(net, x, '{layer}', [{CLASS}])` on the Caffe SqueezeNet "
                       "(`load_model`; image preloaded, preprocessed)", med["engine"], best["engine"], 1.0,
                       section=section))
        more = med["request"] - med["engine"]
        s_explain, s_total = statistics.median(served["explain"]), statistics.median(served["total"])
        r = report.add(Row(
            f"warm request: `POST /api/explain` ({image.name} uploaded, label {label}, default layer `{layer}`), "
            "upload to JSON received and parsed, one connection", med["request"], best["request"], ratio,
            section=section, target="≤ engine + 60 ms",
            extra=(f"engine + {more * 1000:.0f} ms (fastest: + {(best['request'] - best['engine']) * 1000:.0f} ms); "
                   f"the server's own seconds.explain {fmt_s(s_explain)}, "
                   f"seconds.total {fmt_s(s_total)}; answer {len(text) / 1000:.0f} kB"
                   + (f"; {len(failures)} failed: {failures[0]}" if failures else ""))))
        r.ok = more <= 0.060 and not failures
        if busy:  # every attempt was: no verdict on figures the machine's load made
            r.ok = None
            r.extra += "; NOT JUDGED: the machine was busy"
            report.notes.append(f"Web demo: in all {WEB_ATTEMPTS} attempts the in-process engine's median "
                                f"({fmt_s(med['engine'])} in the last) was more than {WEB_BUSY}× its fastest run "
                                f"({fmt_s(best['engine'])}): other processes had the CPUs, and the warm-request row is "
                                "not judged; run again on a quieter machine.")
        elif attempt > 1:
            report.notes.append(f"Web demo: the warm-request rounds were done {attempt} times (the machine was busy "
                                "in the earlier attempts); the table gives the last.")
        timed_here = med["decode"] + med["render"] + med["encode"]
        report.add(Row(
            "where the request's time goes: the server's figures against its steps timed in this process "
            "(same rounds, medians)", section=section,
            extra=(f"engine: {fmt_ms(med['engine'])} here, {fmt_ms(s_explain)} in the server (seconds.explain, "
                   f"its worker thread: {fmt_ms(s_explain - med['engine'])} more); the server's other steps "
                   f"(seconds.total − seconds.explain) {fmt_ms(s_total - s_explain)}, of which timed here "
                   f"{fmt_ms(timed_here)}: decode + preprocess {fmt_ms(med['decode'])}, 5 PNGs (input, overlay, "
                   f"gcam, gb, gb_gcam) {fmt_ms(med['render'])}, base64 + JSON {fmt_ms(med['encode'])} (the other "
                   f"{fmt_ms(s_total - s_explain - timed_here)}: form parsing, temporary file, thread hop, those "
                   f"steps in the worker thread); after seconds.total (the answer sent, HTTP, the client's "
                   f"multipart and its JSON parse, {fmt_ms(med['parse'])}): {fmt_ms(med['request'] - s_total)}")))

        # 4 clients at once against one client sending the same requests back to back
        per_client, clients = 8, 4
        pairs = max(repeats // 2, 2)
        print(f"4 clients at once vs one client: {pairs} alternated pairs of bursts of {clients * per_client} "
              "requests ...", flush=True)
        burst(server.url, form, clients, 2)  # warm the server's worker threads
        seq, conc = [], []
        for i in range(pairs):
            order = ("seq", "conc") if i % 2 == 0 else ("conc", "seq")
            for which in order:
                if which == "seq":
                    seq.append(burst(server.url, form, 1, clients * per_client))
                else:
                    conc.append(burst(server.url, form, clients, per_client))
            print(f"  pair {i + 1}/{pairs}: one client {seq[-1].throughput:.1f} requests/s, {clients} clients "
                  f"{conc[-1].throughput:.1f} requests/s (load {load_average()})", flush=True)
    finally:
        server.__exit__(None, None, None)

    def pooled(bursts: list) -> tuple[list[float], list[str], int]:
        return ([t for b in bursts for t in b.latencies], [f for b in bursts for f in b.failures],
                sum(b.requests for b in bursts))

    ratio = statistics.median(c.throughput / s.throughput if s.throughput else 0.0 for s, c in zip(seq, conc))
    for which, bursts in (("one", seq), ("four", conc)):
        lat, failed, n = pooled(bursts)
        tp = statistics.median(b.throughput for b in bursts)
        figures = (f"{tp:.1f} requests/s; latency p50 {fmt_ms(percentile(lat, 50))}, p95 {fmt_ms(percentile(lat, 95))}; "
                   f"{len(failed)} of {n} failed" + (f" ({failed[0]})" if failed else ""))
        if which == "one":
            report.add(Row(f"one client: {clients * per_client} requests back to back (the same requests as the "
                           f"{clients} clients' burst, alternated with it)", statistics.median(lat) if lat else None,
                           min(lat) if lat else None, section=section, extra=figures))
        else:
            r = report.add(Row(f"{clients} clients at once, each on its own connection sending {per_client} requests "
                               "back to back (server's default -max_queue 8)", statistics.median(lat) if lat else None,
                               min(lat) if lat else None, section=section,
                               target="≥ 0.9× one client's throughput; no request failed",
                               extra=f"throughput {ratio:.2f}× one client's; " + figures))
            r.ok = ratio >= 0.9 and not failed and n == pairs * clients * per_client
    return agree


def vit_run(image_path: Path, repeats: int, report: Report) -> str:
    """ViT-B/16 Grad-CAM at its default layer (the last block's ``ln_1``, a token layer: the layout step
    drops the class token and unflattens the 14 x 14 patches) against the floor on the same net,
    interleaved; the model line of the header."""
    import torch
    import torchvision

    from gradcam_core import image as imageops
    from gradcam_core.engine import explain
    from gradcam_core.engine.layers import default_layer

    torch.manual_seed(0)
    net = torchvision.models.vit_b_16(weights=None).eval()
    with torch.no_grad():  # torchvision starts the head at 0: every score 0, every map blank
        net.heads.head.weight.normal_(0, 0.05)
    image = imageops.preprocess(image_path, 224, 224)[None]
    layer = default_layer(net, image)
    expl = explain(net, image, layer, [CLASS], guided=False)
    print(f"ViT-B/16 at {layer}: layout {expl.layout}, map {tuple(expl.cam_raw.shape[-2:])}, "
          f"max {float(expl.cam_raw.max()):.3g}", flush=True)
    times = interleaved({"floor": floor_of(net, image),
                         "ours_cam": lambda: explain(net, image, layer, [CLASS], guided=False)}, repeats)
    med = {k: statistics.median(t) for k, t in times.items()}
    best = {k: min(t) for k, t in times.items()}
    ratio = statistics.median(x / y for x, y in zip(times["ours_cam"], times["floor"]))
    report.add(Row("ViT-B/16 floor: 1 forward + 1 backward to the input", med["floor"], best["floor"], 1.0,
                   section=SECTION_VIT))
    r = report.add(Row(f"ViT-B/16 Grad-CAM vs its floor (ours, layer {layer}, tokens)", med["ours_cam"],
                       best["ours_cam"], ratio, section=SECTION_VIT, target="≤ 0.80× floor"))
    r.ok = ratio <= 0.80
    return (f"- Transformers: torchvision vit_b_16 with random weights (its head drawn from N(0, 0.05²)), input "
            f"1×3×224×224 ({image_path.name}, Caffe preprocessing: the values do not matter for the timing), its "
            f"default layer {layer} ({expl.layout}: 1 class token + 14×14 patches), class {CLASS} (0-based)")


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7, help="interleaved rounds for in-process timings (7)")
    ap.add_argument("--cli-repeats", type=int, default=5, help="runs of each subprocess measurement (5)")
    ap.add_argument("--folder-repeats", type=int, default=3, help="runs of the 32-image folder (3)")
    ap.add_argument("--cache", type=Path, default=ROOT / "bench" / ".cache",
                    help="where the VGG-16 and the image folder are kept (bench/.cache, git-ignored)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads, here and in subprocesses (2)")
    ap.add_argument("--image", type=Path, default=ROOT / "images" / "cat_dog.jpg")
    ap.add_argument("--markdown", type=Path, help="also write the report as Markdown to this file")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 rounds, 1 run of each subprocess")
    ap.add_argument("--only", choices=("all", "formats", "web", "methods", "vit", "detection", "evaluate"),
                    default="all",
                    help="'formats': only the model-format rows (Caffe ResNet-50, SqueezeNet 1.1 as Caffe, "
                         "torchvision and ONNX), a few minutes; 'web': only the web demo rows (a warm request "
                         "against the engine, 4 clients at once), about a minute; 'methods': only the CAM "
                         "methods' rows (bench/cam_methods.py); 'vit': only the ViT-B/16 Grad-CAM row (a token "
                         "layer against its floor), about a minute; 'detection': the object detection row "
                         "(bench/detection_row.py); 'evaluate': gradcam-evaluate on the sample folder against its "
                         "maps alone (bench/evaluate_bench.py); default: everything")
    ap.add_argument("--scorecam-rounds", type=int, default=1,
                    help="rounds of the Score-CAM and Ablation-CAM rows on VGG-16 and ResNet-50, each call a "
                         "forward per channel (1; SqueezeNet's Score-CAM rows get 3x as many)")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.cli_repeats, args.folder_repeats = 2, 1, 1

    import torch

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # Captum's hook warnings would drown the progress lines
    from gradcam_core import image as imageops
    from gradcam_core.tasks.classify import load_classifier

    report = Report()
    started = datetime.datetime.now(datetime.timezone.utc)
    peers = {}
    for name in ("captum", "pytorch_grad_cam"):
        try:
            peers[name] = __import__(name)
        except ImportError:
            print(f"{name} is not installed (pip install -e '.[bench]'): its rows are skipped", flush=True)
    versions = [f"torch {torch.__version__}"]
    for dist in ("captum", "grad-cam"):
        try:
            from importlib.metadata import version

            versions.append(f"{dist} {version(dist)}")
        except Exception:  # noqa: BLE001
            pass
    load_start = load_average()

    args.cache.mkdir(parents=True, exist_ok=True)
    agree = True
    model_lines = []
    if args.only == "all":
        proto, model = ensure_vgg16(args.cache)
        folder = ensure_folder(args.cache)
        net = load_classifier(proto, model)
        image = imageops.preprocess(args.image, 224, 224)[None]
        batch8 = torch.stack([imageops.preprocess(p, 224, 224) for p in sorted(folder.glob("*.jpg"))[:8]])

        print("checking that the maps agree ...", flush=True)
        agree = check_agreement(net, image, peers, report)
        race(net, image, batch8, peers, args.repeats, report)
        del batch8

        print("caffemodel load ...", flush=True)
        load_run(proto, model, args.cli_repeats, args.threads, report, "model load and whole command (subprocesses)")
        print("whole command ...", flush=True)
        cli_run(proto, model, args.image, args.cli_repeats, args.threads, report,
                "model load and whole command (subprocesses)")
        print("folder of 32 images ...", flush=True)

        def floor_now() -> float:
            return statistics.median(interleaved({"floor": floor_of(net, image)}, 3)["floor"])

        folder_run(proto, model, folder, args.image, floor_now, args.folder_repeats, args.threads, report,
                   "batches (per image, against the one-image floor)")
        del net
        model_lines.append(
            f"- Model: full-size VGG-16, V1 caffemodel with random weights ({model.stat().st_size / MB:.0f} MB), "
            f"input 1×3×224×224 ({args.image.name}), layer {LAYER}, class {CLASS} (0-based)")
    if args.only in ("all", "formats"):
        print("model formats ...", flush=True)
        agree &= formats_run(args.cache, args.image, args.repeats, args.cli_repeats, args.threads, report)
        model_lines.append(
            f"- Model formats: Caffe ResNet-50 ({RESNET50_PROTO.name}, V2 caffemodel with random weights), layer "
            "res5c_relu; the bundled SqueezeNet 1.1 (ImageNet-trained) as Caffe files (layer fire9/concat), "
            "torchvision state_dict (layer features) and an ONNX export of that (the last fire module's Concat "
            f"node); input 1×3×224×224 ({args.image.name}, each form's own preprocessing), class {CLASS} (0-based); "
            f"SqueezeNet: {squeezenet_rounds(args.repeats)} rounds of 3 calls of each variant")
    if args.only in ("all", "web"):
        print("web demo ...", flush=True)
        agree &= web_run(args.image, args.repeats, args.threads, report)
        model_lines.append(
            "- Web demo: `python -m gradcam_core.web -port 0` (the bundled Caffe SqueezeNet 1.1, its default layer) "
            f"in a subprocess with {args.threads} torch threads (OMP_NUM_THREADS), this process's httpx client "
            f"uploading {args.image.name} (label {CLASS + 1}); against it the same Caffe SqueezeNet loaded here "
            f"(`tasks.classify.load_model`): {web_rounds(args.repeats)} interleaved rounds of 3 calls of each "
            f"variant (the server idle while this process computes); then {max(args.repeats // 2, 2)} alternated "
            "pairs of bursts: one client, then 4 clients at once (or the other way round)")
    if args.only in ("all", "methods"):
        print("CAM methods ...", flush=True)
        import cam_methods

        agree &= cam_methods.methods_run(args.cache, args.image, args.repeats, args.scorecam_rounds,
                                         args.threads, report, model_lines)
    if args.only in ("all", "vit"):
        print("ViT-B/16 ...", flush=True)
        model_lines.append(vit_run(args.image, args.repeats, report))
    if args.only in ("all", "detection"):
        print("object detection ...", flush=True)
        import detection_row

        agree &= detection_row.detection_run(args.image, args.repeats, report, model_lines)
    if args.only in ("all", "evaluate"):
        print("gradcam-evaluate ...", flush=True)
        import evaluate_bench

        evaluate_bench.evaluate_run(args.cache, 1 if args.quick else max(1, args.cli_repeats // 5), args.threads, report)
        model_lines.append("- Evaluation: `gradcam-evaluate` (the bundled Caffe SqueezeNet 1.1, its default layer) on "
                           "the 4 sample images with the sample boxes, every method, its defaults, in a fresh process")
    # keep the batch rows together
    order = ["one image, one target", "k = 4 targets, one image (ours: one call; peers: 4 runs)",
             "batches (per image, against the one-image floor)", "model load and whole command (subprocesses)",
             SECTION_RESNET, SECTION_SQUEEZENET, SECTION_VIT, SECTION_WEB]
    report.rows.sort(key=lambda r: order.index(r.section) if r.section in order else len(order))

    report.header = [
        f"Grad-CAM speed benchmark, {started:%Y-%m-%d %H:%M} UTC "
        f"(`python bench/run.py{'' if args.only == 'all' else ' --only ' + args.only}`)",
        "",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; {args.threads} torch threads; "
        + ", ".join(versions) + f"; Python {platform.python_version()}",
        *model_lines,
        *([] if args.only == "web" else [
            "- Floor: `x = image.clone().requires_grad_(); out = net(x); torch.autograd.grad(out[0, c], x)` on the "
            "same net, parameters frozen, PyTorch's default CPU kernels (oneDNN), NCHW",
            f"- In-process: {args.repeats} interleaved rounds after a warm-up round, median (fastest); ratios "
            "(× floor, × faster) are medians of the ratios within each round; "
            f"subprocesses: {args.cli_repeats} runs each"
            + (f" (folder: {args.folder_repeats}), interleaved" if args.only == "all" else "") + ", median"]),
        f"- Machine load average at start / end: {load_start} / {load_average()}; this process's niceness "
        f"{os.nice(0)}",
        f"- Maps agree: {'yes' if agree else 'NO'} (see below)",
    ]
    verdicts = [r for r in report.rows if r.ok is not None]
    report.notes.insert(0, f"Targets: {sum(r.ok for r in verdicts)} of {len(verdicts)} met; not met: "
                        + ("; ".join(f"{r.what} ({r.target})" for r in verdicts if not r.ok) or "none") + ".")
    text = "\n".join(report.header) + "\n\n" + table(report) + "\n\n" + "\n\n".join(report.notes) + "\n"
    print("\n" + text)
    if args.markdown:
        args.markdown.write_text(text)
        print(f"written to {args.markdown}")
    failed = [r for r in report.rows if r.ok is False]
    return 0 if agree and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
