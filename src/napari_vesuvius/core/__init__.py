"""Qt-free, napari-free computation: I/O, models, inference, post-processing, metric, training, export.

Everything under ``core`` must run in a plain script, an offline notebook or a dask worker.
Never import napari, qtpy or magicgui from here.
"""
