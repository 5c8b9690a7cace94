"""Every registry is one ``Registry``: a name registered twice fails at import, and the names one registry uses
of another (a family's targets, stages and tasks; a task's stages; a target's runtime) all exist."""
from __future__ import annotations

import dataclasses
import importlib

import pytest

from device_bench.decoders import DECODERS
from device_bench.parity import GATES
from device_bench.registry import Registry, RegistryError
from device_bench.runners import RUNNERS
from packager.cli import COMMANDS
from packager.families import ALL, FAMILIES, ModelFamily, register
from packager.stages import STAGES
from packager.tasks import TASKS
from targets import TARGETS

REGISTRIES = {"targets": TARGETS, "stages": STAGES, "tasks": TASKS, "families": FAMILIES, "decoders": DECODERS,
              "runners": RUNNERS, "commands": COMMANDS}


@pytest.mark.parametrize("name", sorted(REGISTRIES))
def test_every_registry_refuses_a_name_twice(name):
    registry = REGISTRIES[name]
    assert isinstance(registry, Registry) and len(registry) > 0
    first = next(iter(registry))
    with pytest.raises(RegistryError, match=f"{registry.what} {first!r} registered twice"):
        registry.add(first, registry[first])


def test_a_family_naming_an_unknown_target_fails_where_it_is_declared():
    before = dict(FAMILIES)
    bogus = ModelFamily(name="bogus", model_types=("bogus",), layers="encoder.layer", mask_form="additive-4d",
                        targets=("tflite-int8", "warp-drive"))
    with pytest.raises(RegistryError, match="model family bogus names unknown target 'warp-drive'"):
        register(bogus)
    assert dict(FAMILIES) == before


def test_the_names_registries_use_of_each_other_exist():
    for family in FAMILIES.values():
        for names, registry in ((family.targets, TARGETS), (family.stages, STAGES), (family.tasks, TASKS)):
            if names != ALL:
                registry.check_names(names, f"model family {family.name}")
    for task in TASKS.values():
        STAGES.check_names(task.stages, f"task {task.name}")
    # every task decodes on the device and has its parity gates there
    assert set(TASKS) == set(DECODERS) == set(GATES)
    for target in TARGETS.values():
        RUNNERS.check_names([target.runtime], f"target {target.name}")
    for name, spec in COMMANDS.items():
        module, _, attribute = spec.location.partition(":")
        assert getattr(importlib.import_module(module), attribute), name


def test_unknown_names_are_one_line_listing_the_known():
    error = TARGETS.unknown("warp-drive")
    assert isinstance(error, KeyError) and "unknown target 'warp-drive' (known: " in str(error)
    assert "tflite-int8" in str(error)
    assert dataclasses.is_dataclass(next(iter(FAMILIES.values())))
