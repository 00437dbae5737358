"""The only classes an nnU-Net plans file may name, resolved by exact lookup.

nnU-Net v2 stores its network as strings in ``plans.json`` (``network_class_name`` and, inside
``arch_kwargs``, ``conv_op`` / ``norm_op`` / ``dropout_op`` / ``nonlin``) and imports them with
``pydoc.locate``. A shared model folder is untrusted input, and a dotted name that is *walked* through
module attributes reaches anything (``torch.nn.functional.np.f2py.subprocess.Popen`` with the command in
``nonlin_kwargs`` runs it when the network is built). So here a name is never imported or walked:
it is looked up, as a whole string, in the tables below, which map each accepted spelling to a
``(module, attribute)`` pair written in this file. A name that is not in a table is refused with the
plans file, the field and the value, before anything is constructed.

The tables hold what nnU-Net's planners write (``torch.nn.modules.conv.Conv3d``,
``torch.nn.modules.instancenorm.InstanceNorm3d``, ``torch.nn.LeakyReLU``,
``dynamic_network_architectures.architectures.unet.ResidualEncoderUNet``…), the public ``torch.nn.X``
alias of each, and the bare network class names that nnU-Net's own fallback search accepts. The
``*_kwargs`` dicts that go with them must be plain JSON values (``check_plain_kwargs``).
To support another class, add its exact spellings here (and a test in tests/test_nnunet_security.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from napari_vesuvius.core.inference._nnunet_plans import NnUNetPlansError

#: The ``arch_kwargs`` entries that name a class (nnU-Net's ``_kw_requires_import``).
CLASS_FIELDS: tuple[str, ...] = ("conv_op", "norm_op", "dropout_op", "nonlin")
#: Each class field's keyword-argument dict.
KWARGS_FIELDS: dict[str, str] = {
    "norm_op": "norm_op_kwargs",
    "dropout_op": "dropout_op_kwargs",
    "nonlin": "nonlin_kwargs",
}

_DNA_UNET = "dynamic_network_architectures.architectures.unet"


def _torch_nn(module: str, names: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """``torch.nn.X`` and ``torch.nn.modules.<module>.X`` for each class X."""
    table: dict[str, tuple[str, str]] = {}
    for name in names:
        table[f"torch.nn.{name}"] = ("torch.nn", name)
        table[f"torch.nn.modules.{module}.{name}"] = ("torch.nn", name)
    return table


NETWORK_CLASSES: dict[str, tuple[str, str]] = {
    **{
        spelling: (_DNA_UNET, name)
        for name in ("PlainConvUNet", "ResidualEncoderUNet", "ResidualUNet")
        for spelling in (f"{_DNA_UNET}.{name}", name)
    },
    # where dynamic-network-architectures < 0.3 kept the residual U-Nets (older nnU-Net plans)
    **{
        f"dynamic_network_architectures.architectures.residual_unet.{name}": (_DNA_UNET, name)
        for name in ("ResidualEncoderUNet", "ResidualUNet")
    },
}

OP_CLASSES: dict[str, dict[str, tuple[str, str]]] = {
    "conv_op": _torch_nn("conv", ("Conv3d",)),
    "norm_op": {
        **_torch_nn("instancenorm", ("InstanceNorm3d",)),
        **_torch_nn("batchnorm", ("BatchNorm3d",)),
    },
    "dropout_op": _torch_nn("dropout", ("Dropout", "Dropout3d")),
    "nonlin": _torch_nn(
        "activation",
        ("LeakyReLU", "ReLU", "PReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish", "Tanh", "Sigmoid"),
    ),
}

_PLAIN_SCALARS = (str, int, float, bool, type(None))


def _lookup(table: Mapping[str, tuple[str, str]], value: Any, plans_path: Path, what: str) -> type:
    """The class for an exact, allow-listed name; anything else is refused."""
    if not isinstance(value, str) or value not in table:
        shown = repr(value) if len(repr(value)) <= 200 else repr(value)[:200] + "…"
        accepted = sorted({name for name in table if "." in name})
        raise NnUNetPlansError(
            plans_path,
            f"{what}: refusing class name {shown}; accepted names: {', '.join(accepted)}",
        )
    module_name, attribute = table[value]
    return getattr(importlib.import_module(module_name), attribute)


def network_class(value: Any, plans_path: Path) -> type:
    """The network class named by ``network_class_name`` (one of dynamic-network-architectures' U-Nets)."""
    return _lookup(NETWORK_CLASSES, value, plans_path, "network_class_name")


def op_class(field: str, value: Any, plans_path: Path) -> type | None:
    """The class an ``arch_kwargs`` field names; ``None`` stays ``None`` except for ``conv_op``."""
    if value is None and field != "conv_op":
        return None
    return _lookup(OP_CLASSES[field], value, plans_path, f"arch_kwargs[{field!r}]")


def check_plain_kwargs(value: Any, plans_path: Path, what: str) -> dict[str, Any] | None:
    """A ``*_kwargs`` entry: ``None`` or a dict of identifier keys to JSON scalars (or lists of them).

    Strings are accepted here (``GELU(approximate="tanh")``): they go to an allow-listed class as data.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise NnUNetPlansError(plans_path, f"{what}: expected an object or null, got {type(value).__name__}")
    for key, item in value.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise NnUNetPlansError(plans_path, f"{what}: invalid keyword {key!r}")
        items = item if isinstance(item, list) else [item]
        if not all(isinstance(x, _PLAIN_SCALARS) for x in items):
            raise NnUNetPlansError(
                plans_path,
                f"{what}[{key!r}]: only numbers, strings, booleans and null are accepted, got {item!r}",
            )
    return dict(value)


def resolve_arch_kwargs(arch: Mapping[str, Any], plans_path: Path) -> dict[str, Any]:
    """``arch_kwargs`` with every class field resolved through the allow-list and every value checked.

    Every field is validated before the caller constructs anything. Class fields are resolved whether
    or not ``_kw_requires_import`` lists them; ``_kw_requires_import`` itself may only list class fields.
    """
    kwargs = arch.get("arch_kwargs")
    if not isinstance(kwargs, dict):
        raise NnUNetPlansError(plans_path, "architecture: 'arch_kwargs' must be an object")
    requires = arch.get("_kw_requires_import", [])
    if not isinstance(requires, list | tuple) or not all(isinstance(k, str) for k in requires):
        raise NnUNetPlansError(plans_path, f"architecture: invalid _kw_requires_import {requires!r}")
    unknown = sorted(set(requires) - set(CLASS_FIELDS))
    if unknown:
        raise NnUNetPlansError(
            plans_path,
            f"architecture: _kw_requires_import names {unknown}; "
            f"only {', '.join(CLASS_FIELDS)} may name classes",
        )
    resolved: dict[str, Any] = {}
    for key, value in kwargs.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise NnUNetPlansError(plans_path, f"arch_kwargs: invalid keyword {key!r}")
        if key in CLASS_FIELDS:
            resolved[key] = op_class(key, value, plans_path)
        elif key in KWARGS_FIELDS.values():
            resolved[key] = check_plain_kwargs(value, plans_path, f"arch_kwargs[{key!r}]")
        else:
            resolved[key] = _check_plain_value(value, plans_path, f"arch_kwargs[{key!r}]")
    if "conv_op" not in resolved:
        raise NnUNetPlansError(plans_path, "arch_kwargs: 'conv_op' is missing")
    return resolved


def _check_plain_value(value: Any, plans_path: Path, what: str) -> Any:
    """Numbers, booleans, null and (nested) lists of them: the shapes U-Net arguments take."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_plain_value(item, plans_path, f"{what}[{index}]")
        return value
    if isinstance(value, _PLAIN_SCALARS) and not isinstance(value, str):
        return value
    raise NnUNetPlansError(
        plans_path, f"{what}: only numbers, booleans, null and lists are accepted, got {value!r}"
    )
