"""Dock widgets: thin Qt front-ends that collect parameters, run core jobs in the background and make layers.

All background work goes through :class:`napari_vesuvius.widgets._background.TaskRunner`.
"""
