"""The transfer model: NVLink or network per received replica, time = slowest GPU."""

import pytest
import torch

from eplb_cli.errors import EplbError
from eplb_cli.metrics import count_moves
from eplb_cli.placement import Placement
from eplb_cli.planning.transfer import Links, received, transfer
from eplb_cli.topology import resolve


def test_transfer_by_hand():
    # 2 nodes x 2 GPUs x 1 slot, 4 experts. GPU 1 takes expert 0, which its node held (GPU 0): NVLink.
    # GPUs 2 and 3 take experts 0 and 1, which node 1 never held: network, one replica each.
    topo = resolve(4, 4, 2, slots=4, policy="global")
    old = Placement(torch.tensor([[0, 1, 2, 3]]), topo)
    new = Placement(torch.tensor([[0, 0, 0, 1]]), topo)
    nvlink, network = received(old, new)
    assert nvlink.tolist() == [0, 1, 0, 0] and network.tolist() == [0, 0, 1, 1]
    links = Links(expert_bytes=100, nvlink_gbps=1e-7, network_gbps=1e-8)  # 100 B: 1 s over NVLink, 10 s over the network
    got = transfer(old, new, links)
    assert got["bytes_moved"] == 300 and got["bytes_nvlink"] == 100 and got["bytes_network"] == 200
    assert got["transfer_s"] == pytest.approx(10.0)
    assert got["busiest_receiver"] == 2


def test_received_agrees_with_migration_counts():
    gen = torch.Generator().manual_seed(4)
    topo = resolve(16, 8, 4, slots=24, policy="global")
    def rows() -> torch.Tensor:
        return torch.stack([torch.cat([torch.arange(16), torch.randint(0, 16, (8,), generator=gen)])[torch.randperm(24, generator=gen)]
                            for _ in range(3)])

    old, new = Placement(rows(), topo), Placement(rows(), topo)
    nvlink, network = received(old, new)
    m = count_moves(old, new)
    assert int(nvlink.sum()) == m["moves_intra_node"] and int(network.sum()) == m["moves_inter_node"]


def test_links_reject_nonsense():
    for bad in (dict(expert_bytes=-1), dict(nvlink_gbps=0.0), dict(network_gbps=float("inf"))):
        with pytest.raises(EplbError):
            Links(**bad)
