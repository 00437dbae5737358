"""napari-vesuvius: surface detection for Vesuvius Challenge CT volumes in napari.

Heavy modules (torch, napari) are imported lazily by the submodules that need them,
so ``import napari_vesuvius`` stays cheap.
"""

__version__ = "0.1.0"
