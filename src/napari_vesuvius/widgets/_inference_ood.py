"""The Inference dock's out-of-distribution intensity warning (see *When the model warns that a volume
looks different* in ``docs/user-guide.md``).

Before predicting, the run's job compares a cheap sample of the image with the intensities each model
was trained on (``core/inference/ood.py``). It runs in the job, on the worker thread, because it reads
the volume; the warning informs and never stops the run. When it fires, the dock shows a napari warning
notification and a wrapped ⚠ line (message + remedy) under the progress bar; the line is cleared when
the image or the model changes, or when a later check is quiet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from napari_vesuvius.widgets._sections import show_warning_text, warning_label

#: what a finding is: (the model's name, the ``IntensityShift`` core returned)
Finding = tuple[str, Any]


def check_members(members: Sequence[Any], volume: Any, name: str) -> list[Finding]:
    """Each loaded model's intensity shift on ``volume`` (None-free); runs in the job, never on the GUI.

    ``members`` are the run's ``WeightedModel`` (or ``InferenceModel``) objects; ``name`` names the
    image in the messages. Core is imported here, so the dock's module stays light.
    """
    from napari_vesuvius.core.inference.ood import check_intensity

    found: list[Finding] = []
    for member in members:
        model = getattr(member, "model", member)
        shift = check_intensity(model, volume, name=name)
        if shift is not None:
            found.append((str(getattr(model, "name", "") or ""), shift))
    return found


def checked(members: Sequence[Any], volume: Any, name: str) -> list[Finding] | str:
    """:func:`check_members`, with a failure turned into the line to log: the check informs and never
    stops a run (runs in the job)."""
    try:
        return check_members(members, volume, name)
    except Exception as error:  # any failure of an optional check: say so, predict anyway
        return f"intensity check skipped: {type(error).__name__}: {error}"


def headline(shift: Any) -> str:
    """The warning's first line, from the shift's directions: "Darker and lower contrast than …"."""
    directions = list(shift.directions) or ["different"]
    words = directions[0] if len(directions) == 1 else f"{', '.join(directions[:-1])} and {directions[-1]}"
    return f"{words[:1].upper()}{words[1:]} than the model's training data"


class IntensityWarning:
    """The ⚠ line of the Inference dock and its notification (GUI thread only).

    ``theme`` returns the viewer's current napari theme name (read each time the line is shown, so a
    theme change is followed at the next warning); ``already_shown`` says whether a message was shown
    as a notification already (the TaskRunner shows any ``VesuviusWarning`` the job raised).
    """

    def __init__(
        self, theme: Callable[[], str | None], already_shown: Callable[[str], bool] | None = None
    ) -> None:
        self.label = warning_label(name="intensity_warning")
        self.label.tooltip = (
            "the image's intensities lie outside what the model was trained on; predictions may be "
            "unreliable (User guide: 'When the model warns that a volume looks different')"
        )
        self._theme = theme
        self._already_shown = already_shown or (lambda _message: False)
        #: the findings on display (empty: the line is hidden)
        self.findings: list[Finding] = []

    def show(self, findings: Sequence[Finding]) -> None:
        """Show ``findings`` (a quiet check, ``[]``, clears the line) and notify each new message once."""
        from napari.utils.notifications import show_warning

        unique: list[Finding] = []
        for model, shift in findings:
            if all(shift.message != seen.message for _, seen in unique):
                unique.append((model, shift))
        several = len({model for model, _ in unique}) > 1
        shown = {shift.message for _, shift in self.findings}
        self.findings = unique
        show_warning_text(
            self.label,
            [(f"{model}: {headline(shift)}" if several and model else headline(shift), shift.message,
              f"What to do: {shift.remedy}" if shift.remedy else "")
             for model, shift in unique],
            self._theme(),
        )  # fmt: skip
        for _, shift in unique:
            if shift.message not in shown and not self._already_shown(shift.message):
                show_warning(shift.message)

    def clear(self, *_: Any) -> None:
        """Hide the line (the image or the model changed: the warning no longer applies)."""
        self.findings = []
        show_warning_text(self.label, [])

    @property
    def text(self) -> str:
        """The messages and remedies on display, as plain text (empty when hidden)."""
        return "\n".join(f"{shift.message}\n{shift.remedy}" for _, shift in self.findings)
