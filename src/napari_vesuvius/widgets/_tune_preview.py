"""The Tune dock's live preview: computed in workers, latest request wins, refined to the exact result.

Nothing here runs numerical work on the GUI thread:

* a slider, combo box or slice change asks for a preview; the changes of one pass of the event loop
  are coalesced into one request (``set_config``'s fifteen changes make one);
* the preview of the current slice (2D) or the visible region (3D) is computed by
  :func:`~napari_vesuvius.core.postprocess.preview_region` in a worker. One runs at a time; a request
  arriving meanwhile waits as *the* pending one (it replaces any older pending one, which is never
  computed). A result for another slice, region or layer than the newest request's is stale and
  dropped; one for the same slice with older settings is shown while the newest is computed, so the
  preview follows a drag instead of freezing until the slider stops;
* the scan mask ``ct > 0`` is computed once per CT array in a worker (:class:`ScanMasks`); until it is
  ready, previews gate with the CT read inside the preview's own box (:class:`RegionScan`);
* when the settings rest for :data:`REFINE_DELAY_MS`, the exact whole-volume result is computed in a
  worker (hysteresis, dust, keep-k and cavities need the whole volume) and later previews with the same
  settings are exact crops of it; moving a slider cancels a refinement of stale settings.

The preview layer is created once and then updated in place (data, translate, name).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_vesuvius.core.postprocess import (
    PostprocessConfig,
    PreviewCache,
    labelling_without_gil,
    preview_region,
    scan_mask_from_ct,
)
from napari_vesuvius.core.progress import Progress
from napari_vesuvius.widgets._background import TaskRunner
from napari_vesuvius.widgets._format import percent
from napari_vesuvius.widgets._layers import (
    PREVIEW_OPACITY,
    current_slice,
    layer_array,
    place_like,
    placement,
)

if TYPE_CHECKING:
    from napari_vesuvius.widgets.tune_widget import TuneWidget

#: layer metadata key marking the preview layer (an Image: other docks' layer pickers may skip it)
PREVIEW_KEY = "tune_preview"
#: milliseconds over which control changes are coalesced into one preview request (0: the changes made
#: in one pass of the event loop, e.g. ``set_config``'s fifteen, make one request)
PREVIEW_DELAY_MS = 0
#: milliseconds the settings must rest before the exact whole-volume result is computed
REFINE_DELAY_MS = 250


def preview_colormap() -> Any:
    """Transparent at 0, green at 1: the preview reads over the CT and the probabilities."""
    from napari.utils.colormaps import Colormap

    return Colormap(
        colors=[[0.0, 0.0, 0.0, 0.0], [0.1, 1.0, 0.3, 1.0]], controls=[0.0, 1.0], name="vesuvius preview"
    )


def is_preview(layer: Any) -> bool:
    """Whether ``layer`` is a Tune preview layer."""
    return bool((getattr(layer, "metadata", None) or {}).get(PREVIEW_KEY))


class ScanMasks:
    """The scan mask ``ct > 0`` of the last few CT arrays, each computed once, in a worker thread.

    :meth:`ready` is the GUI thread's non-blocking look-up; :meth:`get` computes (or waits for another
    worker computing) the mask and must only be called from a worker.
    """

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self._masks: OrderedDict[int, tuple[Any, np.ndarray]] = OrderedDict()

    def ready(self, ct: Any) -> np.ndarray | None:
        """The mask of ``ct`` if already computed (same array object), else None."""
        entry = self._masks.get(id(ct))
        return entry[1] if entry is not None and entry[0] is ct else None

    def get(self, ct: Any) -> np.ndarray:
        """The mask of ``ct``, computing it (reads the whole CT: call from a worker only)."""
        with self._lock:
            mask = self.ready(ct)
            if mask is None:
                mask = scan_mask_from_ct(ct)
                self._masks[id(ct)] = (ct, mask)
                while len(self._masks) > self.keep:
                    self._masks.popitem(last=False)
            return mask


class RegionScan:
    """A stand-in scan mask that reads only the requested box of the CT: ``ct[box] > 0``.

    Used by a preview while the whole mask is still being computed; equal to it on every box.
    """

    def __init__(self, ct: Any) -> None:
        self.ct = ct
        self.shape = tuple(int(n) for n in ct.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.ct[key]) > 0


@dataclasses.dataclass(frozen=True)
class PreviewRequest:
    """Everything a preview worker needs, captured on the GUI thread."""

    generation: int
    layer: Any
    prob: Any
    ct: Any
    config: PostprocessConfig
    box: tuple[slice, ...]

    @property
    def key(self) -> tuple[int, int, PostprocessConfig]:
        """What the exact refinement depends on: the arrays (by identity) and the settings."""
        return (id(self.prob), id(self.ct), self.config)


@dataclasses.dataclass(frozen=True)
class PreviewResult:
    request: PreviewRequest
    region: np.ndarray | None = None
    exact: bool = False
    error: str = ""


class LivePreview:
    """Drives the Tune dock's preview layer from its controls (see the module docstring)."""

    def __init__(self, widget: TuneWidget) -> None:
        from qtpy.QtCore import QTimer

        self.widget = widget
        self.viewer = widget.viewer
        self.cache = PreviewCache()
        self.scans = ScanMasks()
        self.preview_task = TaskRunner(name="preview_task", activity=False)
        self.refine_task = TaskRunner(name="refine_task", activity=False)
        self.scan_task = TaskRunner(name="scan_task", activity=False)
        for task in (self.preview_task, self.refine_task, self.scan_task):
            task.visible = False
        self._generation = 0
        #: the newest request made, and the generation of the last result shown
        self._newest: PreviewRequest | None = None
        self._shown_generation = 0
        self._pending: PreviewRequest | None = None
        self._refine_again = False
        self._held = False
        #: the (arrays, settings) key of the refinement running now
        self._refining: Any = None
        self._layer: Any = None
        #: previews computed but dropped as stale (for another slice, region or layer than the newest)
        self.dropped = 0
        #: previews shown (tests and benchmarks wait on it)
        self.shown = 0
        self._timer = QTimer(widget.native)  # children of the widget: they die with it
        self._timer.setSingleShot(True)
        self._timer.setInterval(PREVIEW_DELAY_MS)
        self._timer.timeout.connect(self.request)
        self._refine_timer = QTimer(widget.native)
        self._refine_timer.setSingleShot(True)
        self._refine_timer.setInterval(REFINE_DELAY_MS)
        self._refine_timer.timeout.connect(self.refine)

    # -- inputs ----------------------------------------------------------------------------------
    def _ct_array(self, prob: Any) -> Any:
        """The CT array that gates the preview (None: no CT, gating off or a different shape)."""
        widget = self.widget
        if widget.ct.value is None or not widget.gate_to_scan.value:
            return None
        ct = layer_array(widget.ct.value)
        return ct if tuple(ct.shape) == tuple(prob.shape) else None

    def ensure_scan_mask(self, *_: Any) -> None:
        """Start computing the chosen CT's scan mask in the background, if it is needed and missing."""
        layer = self.widget.probability.value
        if layer is None or self.scan_task.running:
            return
        ct = self._ct_array(layer_array(layer))
        if ct is None or self.scans.ready(ct) is not None:
            return

        def job() -> Generator[Progress, None, None]:
            yield Progress(0, 1, "scan mask (ct > 0)")
            self.scans.get(ct)

        self.scan_task.start(
            job,
            description="scan mask",
            on_result=lambda _: self.schedule(),
            on_finished=self.ensure_scan_mask,
        )

    def _box(self, prob: Any) -> tuple[slice, ...] | None:
        if self.viewer.dims.ndisplay == 2:
            axis, index = current_slice(self.viewer, self.widget.probability.value)
            if not 0 <= index < prob.shape[axis]:
                return None
            box = [slice(0, int(n)) for n in prob.shape]
            box[axis] = slice(index, index + 1)
            return tuple(box)
        # the visible region; an axis the layer's corners do not span yet (not drawn in 3D) is taken whole
        corners = np.asarray(self.widget.probability.value.corner_pixels, dtype=int)
        box = []
        for lo, hi, n in zip(corners[0], corners[1], prob.shape, strict=True):
            lo, hi = max(0, int(lo)), min(int(n), int(hi) + 1)
            box.append(slice(lo, hi) if hi - lo > 1 else slice(0, int(n)))
        return tuple(box)

    # -- requests --------------------------------------------------------------------------------
    def schedule(self, *_: Any) -> None:
        """A control or the slice changed: ask for a preview, and for the exact result once at rest.

        When no preview is being computed the request starts at once (while the GUI repaints); more
        changes in the same pass of the event loop follow as one more request through the timer.
        """
        if self._held:
            return
        if not self.preview_task.running and self._pending is None:
            self.request()
        self._timer.start()
        self._refine_timer.start()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Change many controls at once (``set_config``), then ask for one preview of the result."""
        self._held = True
        try:
            yield
        finally:
            self._held = False
            self.schedule()

    @property
    def idle(self) -> bool:
        """No preview or refinement requested, pending or running."""
        return not (
            self._timer.isActive()
            or self._refine_timer.isActive()
            or self._pending is not None
            or self.preview_task.running
            or self.refine_task.running
        )

    @property
    def up_to_date(self) -> bool:
        """The preview shown is the result of the newest request (not an interim one)."""
        return self._newest is not None and self._shown_generation == self._newest.generation

    def request(self, force: bool = False) -> None:
        """Ask for the preview of the current settings now (the newest request wins).

        Nothing is asked when the newest request already has the same inputs, settings and region
        (unless ``force``: the exact result for them has just been cached).
        """
        self._timer.stop()
        widget = self.widget
        layer = widget.probability.value
        if not widget.live_preview.value or layer is None:
            self._generation += 1  # whatever is in flight is stale now
            self._pending = self._newest = None
            self.remove()
            return
        try:
            config = widget.config()
        except ValueError as error:
            widget.preview_info.value = f"invalid settings: {error}"
            return
        prob = layer_array(layer)
        box = self._box(prob)
        if box is None:
            return
        ct = self._ct_array(prob)
        newest = self._newest
        if (
            not force
            and newest is not None
            and newest.layer is layer
            and newest.prob is prob
            and newest.ct is ct
            and newest.box == box
            and newest.config == config
        ):
            return  # already computed, being computed or pending
        self._generation += 1
        request = PreviewRequest(self._generation, layer, prob, ct, config, box)
        self._newest = request
        if self.refine_task.running and self._refining != request.key:
            self._refine_again = True
            self.refine_task.cancel()  # superseded: stop it at its next step
        if self.preview_task.running:
            self._pending = request
        else:
            self._start(request)

    def _start(self, request: PreviewRequest) -> None:
        self._pending = None
        cache, scans = self.cache, self.scans

        def job() -> Generator[Progress, None, PreviewResult]:
            yield Progress(0, 1, "preview")
            scan: Any = None
            if request.ct is not None:
                scan = scans.ready(request.ct)
                if scan is None and request.config.threshold_mode == "percentile":
                    scan = scans.get(request.ct)  # the percentile is taken over the whole scan
                elif scan is None:
                    scan = RegionScan(request.ct)
            use_cache = None if isinstance(scan, RegionScan) else cache
            try:
                exact = not request.config.uses_global_context or (
                    use_cache is not None and use_cache.result(request.prob, request.config, scan) is not None
                )
                region = preview_region(request.prob, request.box, request.config, scan, cache=use_cache)
            except (ValueError, OSError) as error:  # VesuviusError is a ValueError or OSError
                return PreviewResult(request, error=str(error))
            return PreviewResult(request, region, exact)

        self.preview_task.start(
            job, description="preview", on_result=self._show, on_finished=self._start_pending
        )

    def _start_pending(self) -> None:
        if self._pending is not None and not self.preview_task.running:
            self._start(self._pending)

    # -- showing ---------------------------------------------------------------------------------
    def _show(self, result: PreviewResult) -> None:
        request = result.request
        newest = self._newest
        if (
            newest is None
            or request.generation <= self._shown_generation
            or request.layer is not newest.layer
            or request.box != newest.box
        ):
            self.dropped += 1  # stale: another layer or slice is wanted now (or a newer result is shown)
            return
        # the newest request's result, or, while a drag goes on, an interim one for the same slice (the
        # newest request follows it at once): the preview keeps moving with the slider
        interim = request.generation != newest.generation
        self._shown_generation = request.generation
        if result.error:
            self.widget.preview_info.value = f"preview failed: {result.error}"
            return
        layer = request.layer
        data = result.region.astype(np.uint8)
        origin = [b.start for b in request.box]
        name = f"{layer.name} preview"
        preview = self._layer
        if preview is None or preview not in self.viewer.layers:
            # an Image with a two-colour map, not Labels: a first Labels layer makes napari compile its
            # numba colour mapping on the GUI thread (seconds), and a binary preview needs no label tools
            selected = (set(self.viewer.layers.selection), self.viewer.layers.selection.active)
            self._layer = self.viewer.add_image(
                data,
                name=name,
                colormap=preview_colormap(),
                contrast_limits=(0, 1),
                interpolation2d="nearest",
                blending="translucent",
                opacity=PREVIEW_OPACITY,
                metadata={PREVIEW_KEY: True},
                **placement(layer, origin),
            )
            # adding selects the new layer: keep the user's selection (and layer controls) instead
            self.viewer.layers.selection.clear()
            self.viewer.layers.selection.update(selected[0])
            self.viewer.layers.selection.active = selected[1]
        else:  # in place: never remove and re-add a layer while previewing
            if preview.name != name:
                preview.name = name
            place_like(preview, layer, origin)
            preview.data = data
        self.shown += 1
        where = "slice" if self.viewer.dims.ndisplay == 2 else "view"
        positive = float(result.region.mean()) if result.region.size else 0.0
        quality = "exact" if result.exact else "approximate, refining…"
        if interim:
            quality = "updating…"
        self.widget.preview_info.value = f"preview: {percent(positive)} positive in this {where} ({quality})"

    def remove(self) -> None:
        """Remove the preview layer (live preview switched off or no probability layer)."""
        if self._layer is not None and self._layer in self.viewer.layers:
            self.viewer.layers.remove(self._layer)
        self._layer = None
        self.widget.preview_info.value = ""

    # -- exact refinement ------------------------------------------------------------------------
    def refine(self) -> None:
        """Compute the exact whole-volume result for the current settings in the background.

        Hysteresis, dust, keep-k and 3D cavities need the whole volume (see ``core.postprocess.preview``);
        once the result is cached, previews with the same settings are exact crops of it.
        """
        widget = self.widget
        layer = widget.probability.value
        if not widget.live_preview.value or layer is None:
            return
        try:
            config = widget.config()
        except ValueError:
            return
        if not config.uses_global_context:
            return
        prob = layer_array(layer)
        ct = self._ct_array(prob)
        key = (id(prob), id(ct), config)
        if self.refine_task.running:
            if self._refining != key:
                self._refine_again = True
                self.refine_task.cancel()
            return
        scan = None if ct is None else self.scans.ready(ct)
        if ct is not None and scan is None:
            return  # the scan mask's worker schedules a preview (and this) when the mask is ready
        if self.cache.result(prob, config, scan) is not None:
            return
        cache = self.cache

        def job() -> Generator[Progress, None, Any]:
            yield Progress(0, 2, "refining the preview: threshold")
            with labelling_without_gil():  # cc3d would hold the GIL, freezing the GUI, for ~0.1 s a call
                # the whole-volume threshold first: previews that change only the clean-up crop it
                cache.prepare(prob, config, scan)
                yield Progress(1, 2, "refining the preview: clean-up")
                yield from cache.iter_prepare_result(prob, config, scan)
            return key

        def refined(done: Any) -> None:
            if done == self._refining_key_now():
                self.request(force=True)  # the exact crop replaces the approximate preview

        def finished() -> None:
            self._refining = None
            if self._refine_again:
                self._refine_again = False
                self._refine_timer.start()

        self._refining = key
        self.refine_task.start(job, description="refine preview", on_result=refined, on_finished=finished)

    def _refining_key_now(self) -> Any:
        layer = self.widget.probability.value
        if layer is None:
            return None
        try:
            config = self.widget.config()
        except ValueError:
            return None
        prob = layer_array(layer)
        return (id(prob), id(self._ct_array(prob)), config)
