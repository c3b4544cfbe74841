"""Locating pods' network namespaces from a /proc tree (a fake one, laid out like the host's)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cni.agent import procfs

UID_A = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
UID_B = "11111111-2222-3333-4444-555555555555"
UID_HOSTNET = "99999999-8888-7777-6666-555555555555"


@pytest.mark.parametrize(
    ("cgroup", "uid"),
    [
        (f"0::/kubepods/besteffort/pod{UID_A}/3f2a\n", UID_A),
        (
            f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_A.replace('-', '_')}"
            ".slice/cri-containerd-ab12.scope\n",
            UID_A,
        ),
        (f"12:memory:/kubepods/pod{UID_B}/c1\n11:cpu:/kubepods/pod{UID_B}/c1\n", UID_B),
        (f"0::/../../kubelet-kubepods-pod{UID_B.replace('-', '_')}.slice/cri-containerd-x.scope\n", UID_B),
        ("0::/system.slice/containerd.service\n", None),
        ("0::/user.slice/user-0.slice/session-1.scope\n", None),
    ],
)
def test_pod_uid_in_cgroup(cgroup: str, uid: str | None) -> None:
    assert procfs.pod_uid_in_cgroup(cgroup) == uid


def fake_proc(root: Path, pid: int, cgroup: str, netns_of: int | None = None) -> None:
    d = root / str(pid)
    (d / "ns").mkdir(parents=True)
    (d / "cgroup").write_text(cgroup)
    if netns_of is None:
        (d / "ns" / "net").write_text(f"netns of {pid}")
    else:  # same inode as another process's: the same namespace
        os.link(root / str(netns_of) / "ns" / "net", d / "ns" / "net")


def test_pod_netns_paths(tmp_path: Path) -> None:
    fake_proc(tmp_path, 1, "0::/init.scope\n")
    fake_proc(tmp_path, 700, f"0::/kubepods/besteffort/pod{UID_A}/app\n")
    fake_proc(tmp_path, 500, f"0::/kubepods/besteffort/pod{UID_A}/pause\n")
    fake_proc(tmp_path, 800, f"0::/kubepods/pod{UID_B}/pause\n")
    fake_proc(tmp_path, 900, f"0::/kubepods/pod{UID_HOSTNET}/pause\n", netns_of=1)
    fake_proc(tmp_path, 901, f"0::/kubepods/pod{UID_HOSTNET}/app\n")  # even if another process differs
    fake_proc(tmp_path, 950, "0::/system.slice/kubelet.service\n")
    (tmp_path / "self").mkdir()
    (tmp_path / "1000").mkdir()  # exited mid-scan: no cgroup file

    found = procfs.pod_netns_paths(tmp_path)
    assert found == {
        UID_A: str(tmp_path / "500" / "ns" / "net"),  # lowest pid of the pod
        UID_B: str(tmp_path / "800" / "ns" / "net"),
    }


def test_missing_proc_root(tmp_path: Path) -> None:
    assert procfs.pod_netns_paths(tmp_path / "none") == {}
