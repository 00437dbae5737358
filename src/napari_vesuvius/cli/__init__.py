"""The ``napari-vesuvius`` command line: every GUI action has a CLI equivalent calling the same core code."""
