"""The first-layout rules of `mipart-daemon --layouts` (the chart's daemon.layouts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mipart.agent.gpunode.layouts import LayoutsError, first_match, load_layouts
from mipart.agent.main import main


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "layouts.yaml"
    path.write_text(text)
    return path


def test_the_first_rule_whose_labels_the_node_has_wins(tmp_path: Path) -> None:
    rules = load_layouts(
        write(
            tmp_path,
            """
- matchLabels: {mipart.io/pool: small}
  memoryPartition: NPS4
  computePartition: CPX
- matchLabels: {}
  computePartition: DPX
""",
        )
    )
    small = first_match(rules, {"mipart.io/pool": "small", "zone": "a"})
    assert small is not None
    assert small.spec(2) == {
        "memoryPartition": "NPS4",
        "gpus": [{"index": 0, "computePartition": "CPX"}, {"index": 1, "computePartition": "CPX"}],
    }
    other = first_match(rules, {"mipart.io/pool": "large"})
    assert other is not None
    assert other.spec(1) == {"gpus": [{"index": 0, "computePartition": "DPX"}]}


def test_no_rule_matches_no_labels_given(tmp_path: Path) -> None:
    rules = load_layouts(write(tmp_path, "- {matchLabels: {a: b}, memoryPartition: NPS1}\n"))
    assert first_match(rules, {}) is None
    assert load_layouts(write(tmp_path, "")) == ()


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("- {matchLabels: {}, computePartition: TPX}\n", "layouts[0]: computePartition"),
        ("- {matchLabels: {}}\n", "give memoryPartition, computePartition or both"),
        (
            "- {matchLabels: {}, memoryPartition: NPS4, computePartition: SPX}\n",
            "SPX cannot run with NPS4; valid combinations:",
        ),
        ("- {matchLabel: {}, memoryPartition: NPS1}\n", "matchLabel"),
        ("- {memoryPartition: NPS1}\n", "matchLabels: Field required"),
        ("{matchLabels: {}}\n", "expected a list of layouts"),
        ("- [unclosed\n", "layouts.yaml"),
    ],
)
def test_a_bad_file_is_refused_naming_the_entry_and_field(
    tmp_path: Path, text: str, named: str
) -> None:
    with pytest.raises(LayoutsError) as err:
        load_layouts(write(tmp_path, text))
    assert named in str(err.value)


def test_the_daemon_refuses_to_start_on_a_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "- {matchLabels: {}, memoryPartition: NPS3}\n")
    assert main(["--layouts", str(path), "--socket", str(tmp_path / "s.sock")]) == 2
    err = capsys.readouterr().err
    assert "mipart-daemon: --layouts:" in err
    assert "layouts[0]: memoryPartition" in err
