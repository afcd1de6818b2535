"""The sidecar's configuration document: model, loading, JSON Schema, mapping onto the cores.

Typical use by the daemon::

    config = load_config("/etc/kipsec/sidecar.yaml")      # ConfigError lists bad fields
    for plan in to_core(config, wall_clock_epoch=epoch):  # one PeerPlan per peer
        ...

See ``docs/sidecar-config.md`` for the document itself.
"""

from __future__ import annotations

from .errors import ConfigError, FieldError
from .load import MIGRATIONS, load_config, load_config_data, load_config_string
from .model import API_VERSION, KIND, SidecarConfig
from .to_core import IpsecSaArgs, ManualSas, PeerPlan, ike_configs, manual_sa_arguments, to_core

__all__ = [
    "API_VERSION",
    "KIND",
    "MIGRATIONS",
    "ConfigError",
    "FieldError",
    "IpsecSaArgs",
    "ManualSas",
    "PeerPlan",
    "SidecarConfig",
    "ike_configs",
    "load_config",
    "load_config_data",
    "load_config_string",
    "manual_sa_arguments",
    "to_core",
]
