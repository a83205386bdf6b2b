"""The layout a node starts from: rules by node label (the chart's daemon.layouts, mounted as
a file), the first match written into GPUNode.spec when the daemon creates its GPUNode. After
that the spec is the desired state, and the controller's planner or an admin owns it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mipart.geometry import ComputeMode, InvalidLayout, MemoryMode, check_combination


class LayoutsError(ValueError):
    """A layouts file that cannot be used; the message names the entry and the field."""


class LayoutRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    match_labels: dict[str, str] = Field(alias="matchLabels")
    memory_partition: MemoryMode | None = Field(default=None, alias="memoryPartition")
    compute_partition: ComputeMode | None = Field(default=None, alias="computePartition")

    @model_validator(mode="after")
    def _a_layout(self) -> LayoutRule:
        if self.memory_partition is None and self.compute_partition is None:
            raise ValueError("give memoryPartition, computePartition or both")
        if self.memory_partition is not None and self.compute_partition is not None:
            check_combination(self.compute_partition, self.memory_partition)
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in self.match_labels.items())

    def spec(self, gpu_count: int) -> dict[str, Any]:
        """The GPUNode.spec of this layout on a node with gpu_count GPUs."""
        spec: dict[str, Any] = {}
        if self.memory_partition is not None:
            spec["memoryPartition"] = self.memory_partition.value
        if self.compute_partition is not None:
            mode = self.compute_partition.value
            spec["gpus"] = [{"index": i, "computePartition": mode} for i in range(gpu_count)]
        return spec


def load_layouts(path: Path) -> tuple[LayoutRule, ...]:
    """The rules in a YAML list, in order; LayoutsError names what is wrong and where."""
    try:
        entries = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise LayoutsError(f"{path}: {err}") from None
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise LayoutsError(f"{path}: expected a list of layouts, got {type(entries).__name__}")
    rules = []
    for index, entry in enumerate(entries):
        try:
            rules.append(LayoutRule.model_validate(entry))
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'entry'}: {e['msg']}" for e in err.errors()
            )
            raise LayoutsError(f"{path}: layouts[{index}]: {problems}") from None
        except InvalidLayout as err:
            raise LayoutsError(f"{path}: layouts[{index}]: {err}") from None
    return tuple(rules)


def first_match(rules: Sequence[LayoutRule], labels: Mapping[str, str]) -> LayoutRule | None:
    return next((rule for rule in rules if rule.matches(labels)), None)
