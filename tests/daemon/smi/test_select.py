"""--gpu, as amd-smi takes it: an index, a comma list, a BDF, a UUID or all."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from mipart.api.v1 import node_pb2 as pb
from mipart.smi.client import Endpoint
from mipart.smi.select import UnknownGpu, gpu_selection

GPUS = [
    pb.Gpu(
        index=i,
        bdf=f"0000:{bus}:00.0",
        uuid=f"40ff74a1-0000-1000-800{i}-3c7d0000aaaa",
        partitions=[
            pb.Partition(id=f"gpu{i}-cpx-{p}", bdf=f"0000:{bus}:00.{p}", uuid=f"{p}-of-{i}")
            for p in range(8)
        ],
    )
    for i, bus in enumerate(["05", "26", "46", "65"])
]


def resolve(text: str) -> list[int]:
    return gpu_selection(text).resolve(GPUS, "n1")


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("2", [2]),
        ("3,1", [3, 1]),  # in the order given
        ("1, 1,2,", [1, 2]),  # each once; blanks and a trailing comma are fine
        ("0000:46:00.0", [2]),
        ("46:00.0", [2]),  # without the PCI domain
        ("0000:65:00.0,0", [3, 0]),
        ("40ff74a1-0000-1000-8001-3c7d0000aaaa", [1]),
        ("40FF74A1-0000-1000-8001-3C7D0000AAAA", [1]),
        ("all", [0, 1, 2, 3]),
        ("ALL", [0, 1, 2, 3]),
    ],
)
def test_an_index_a_list_a_bdf_a_uuid_or_all(text: str, want: list[int]) -> None:
    assert resolve(text) == want


@pytest.mark.parametrize("text", ["9", "0,9", "0000:99:00.0", "not-a-gpu", "-1", "²"])
def test_an_unknown_gpu_names_what_was_given_and_lists_the_gpus(text: str) -> None:
    with pytest.raises(UnknownGpu) as err:
        resolve(text)
    message = str(err.value)
    assert message.startswith(f"--gpu {text}: no GPU ")
    assert "node n1" in message
    for g in GPUS:
        assert f"{g.index}   {g.bdf}  {g.uuid}" in message


def test_a_partitions_bdf_is_named_as_such() -> None:
    with pytest.raises(UnknownGpu, match=r"0000:26:00\.3 is partition gpu1-cpx-3 of GPU 1"):
        resolve("0000:26:00.3")


@pytest.mark.parametrize("text", ["", ",", "all,0"])
def test_bad_syntax_is_a_usage_error(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        gpu_selection(text)


def test_a_relative_socket_path_is_made_absolute_for_grpc() -> None:
    target = Endpoint(socket="run/node.sock").describe()
    assert target == f"unix://{Path.cwd() / 'run' / 'node.sock'}"
