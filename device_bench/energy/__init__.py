"""Pluggable energy measurement: sysfs sensors, command meters, or a clearly-marked CPU-time estimate."""
from .base import ESTIMATED, MEASURED, EnergyError, EnergySource, SourceUnavailable
from .meter import BACKENDS, Detection, EnergyConfig, EnergyMeter, detect

__all__ = ["BACKENDS", "ESTIMATED", "MEASURED", "Detection", "EnergyConfig", "EnergyError", "EnergyMeter",
           "EnergySource", "SourceUnavailable", "detect"]
