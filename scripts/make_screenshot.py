"""Make docs/images/screenshot.png: napari with the plugin's widgets on the synthetic sample.

Run under a virtual display: ``xvfb-run -a python scripts/make_screenshot.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

os.environ.setdefault("NAPARI_VESUVIUS_NO_SETTINGS", "1")
OUT = Path(__file__).resolve().parent.parent / "docs" / "images" / "screenshot.png"


def main() -> int:
    import napari

    from napari_vesuvius.core.synthetic import make_fragment

    viewer = napari.Viewer(title="napari-vesuvius")
    viewer.window._qt_window.resize(1600, 1000)
    fragment = make_fragment((128, 128, 128), seed=7)
    viewer.add_image(fragment.image, name="synthetic CT", contrast_limits=(0, 255))
    # a stand-in for a network output (blurred ground truth), to show the Tune widget's preview
    prob = np.clip(ndimage.gaussian_filter(fragment.surface.astype(np.float32), 1.2) * 1.5, 0, 1)
    viewer.add_image(prob, name="probability", colormap="magma", blending="additive", visible=False)
    from napari_vesuvius.widgets._layers import label_colormap

    viewer.add_labels(
        fragment.labels, name="labels (1=surface, 2=ignore)", colormap=label_colormap(), opacity=0.6
    )
    widgets = {}
    for name in ("Data", "Inference", "Tune", "Score", "Train", "Export submission"):
        try:
            _, widgets[name] = viewer.window.add_plugin_dock_widget("napari-vesuvius", name, tabify=True)
        except KeyError:
            continue
    tune = widgets.get("Tune")
    if tune is not None:
        tune.probability.value = viewer.layers["probability"]
        tune.ct.value = viewer.layers["synthetic CT"]
        viewer.dims.set_current_step(0, 64)
        tune.update_preview()
        tune.native.parentWidget().raise_()
    napari.utils.nbscreenshot  # noqa: B018 - imported for its side effect of initialising the canvas
    viewer.window.screenshot(str(OUT), canvas_only=False)
    print(f"wrote {OUT}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
