"""Local attribution: the workloads file's rules, Kubernetes pods from cgroup paths, the placeholder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.attribution import Attributor
from agent.kubernetes import Pods, pod_uid, pod_workload
from agent.process import Process, Processes, read_cgroup
from agent.workloads import Workload, WorkloadsError, load_rules, parse_rules

UID = "6b5b4ac8-0a3e-4c34-9c4e-2f0c8d1f5a01"


def proc(comm: str = "java", cmdline: str = "", cgroup: str = "", netns: int = 0, pid: int = 42) -> Process:
    return Process(pid, comm, cmdline, cgroup, netns, True)


def test_rules_first_match_wins_with_named_groups() -> None:
    a = Attributor(parse_rules([
        {"comm": "nginx", "app": "edge-proxy", "cluster": "edge-prod"},
        {"cmdline": "--service=(?P<svc>[a-z-]+)( --env=(?P<env>[a-z]+))?", "app": "{svc}",
         "cluster": "{svc}-{env}"},
        {"cgroup": r"/system\.slice/(?P<unit>[a-z-]+)\.service", "app": "{unit}"},
        {"netns": "4026532000", "app": "by-inode"},
        {"cmdline": ".*", "app": "catch-all"},
    ]))
    assert a.attribute(proc("nginx", "--service=ignored")).workload == Workload("edge-proxy", "edge-prod")
    assert a.attribute(proc(cmdline="java -jar x.jar --service=orders-api --env=prod")).workload == Workload(
        "orders-api", "orders-api-prod")
    assert a.attribute(proc(cgroup="/system.slice/cron-daemon.service")).workload == Workload("cron-daemon")
    assert a.attribute(proc(netns=4026532000)).workload == Workload("by-inode")
    assert a.attribute(proc()).workload == Workload("catch-all")
    assert a.attribute(proc()).source == "rule"


def test_named_network_namespace(tmp_path: Path) -> None:
    from agent.process import NetnsNames

    (tmp_path / "blue").write_text("")
    inode = (tmp_path / "blue").stat().st_ino
    a = Attributor(parse_rules([{"netns": "blue", "app": "blue-api"}]), netns_names=NetnsNames(tmp_path))
    assert a.attribute(proc(netns=inode)).workload == Workload("blue-api")
    assert not a.attribute(proc(netns=inode + 1)).attributed


def test_nothing_matches_gives_the_counted_placeholder() -> None:
    a = Attributor(parse_rules([{"comm": "nginx", "app": "edge"}]), processes=Processes(Path("/nonexistent")))
    got = a.resolve(99999, "worker-7")
    assert (got.workload, got.source, got.attributed) == (Workload("unattributed:worker-7"), "none", False)
    a.resolve(99998, "worker-8")
    assert a.unattributed_processes == 2


@pytest.mark.parametrize(("doc", "message"), [
    ({"app": "x"}, "expected a JSON list"),
    ([{"app": "x"}], "rule 0: needs exactly one of comm, cmdline, cgroup, netns (has none)"),
    ([{"comm": "a", "cmdline": "b", "app": "x"}], "rule 0: needs exactly one of"),
    ([{"comm": "a"}], "rule 0: needs a non-empty string 'app'"),
    ([{"comm": "a", "app": "x"}, {"cmdline": "(", "app": "y"}], "rule 1: 'cmdline' is not a valid regular"),
    ([{"cmdline": "--svc=(?P<svc>.+)", "app": "{service}"}],
     "'app' uses {service}, which is not a named group"),
    ([{"comm": "a", "app": "{x}"}], "'app' uses {x}"),
    ([{"comm": "a", "app": "x", "team": "t"}], "unknown keys ['team']"),
])
def test_bad_rules_are_named(doc: object, message: str) -> None:
    with pytest.raises(WorkloadsError, match=re.escape(message)):
        parse_rules(doc)


def test_workloads_file_errors(tmp_path: Path) -> None:
    with pytest.raises(WorkloadsError, match="cannot read the workloads file"):
        load_rules(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(WorkloadsError, match="is not JSON"):
        load_rules(tmp_path / "bad.json")


@pytest.mark.parametrize(("cgroup", "uid"), [
    (f"/kubepods/burstable/pod{UID}/0123abcd", UID),
    (f"/kubepods/pod{UID}/0123abcd", UID),
    ("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + UID.replace("-", "_")
     + ".slice/cri-containerd-0123abcd.scope", UID),
    ("/system.slice/docker-0123abcd.scope", None),
    (f"/user.slice/pod{UID}", None),  # not under kubepods
])
def test_pod_uid_from_cgroup_path(cgroup: str, uid: str | None) -> None:
    assert pod_uid(cgroup) == uid


def pod(uid: str, labels: dict[str, str], owner: str | None = None,
        namespace: str = "shop") -> dict[str, object]:
    meta: dict[str, object] = {"uid": uid, "name": "p-1", "namespace": namespace, "labels": labels}
    if owner:
        meta["ownerReferences"] = [{"kind": "ReplicaSet", "name": owner, "controller": True}]
    return {"metadata": meta}


def test_pod_metadata() -> None:
    labels = {"app.kubernetes.io/name": "cart", "app.kubernetes.io/instance": "cart-eu"}
    assert pod_workload(pod(UID, labels)) == Workload("cart", "cart-eu")
    assert pod_workload(pod(UID, {"app": "cart", "pod-template-hash": "7d9f8"}, owner="cart-v42-7d9f8")) \
        == Workload("cart", "cart-v42")
    assert pod_workload(pod(UID, {}, owner="billing-5c4b9", namespace="pay")) == Workload("billing-5c4b9",
                                                                                          "billing-5c4b9")


def test_pods_resolver_reads_and_rereads_the_pod_list(tmp_path: Path) -> None:
    path = tmp_path / "pods.json"
    other = "11111111-2222-3333-4444-555555555555"
    path.write_text(json.dumps({"kind": "PodList", "items": [pod(UID, {"app": "cart"}, "cart-v1-abc")]}))
    pods = Pods(path, recheck_seconds=0)
    a = Attributor([], pods)
    mine, theirs = proc(cgroup=f"/kubepods/burstable/pod{UID}/c1"), proc(cgroup=f"/kubepods/pod{other}/c2")
    assert a.attribute(mine).workload == Workload("cart", "cart-v1-abc")
    assert a.attribute(mine).source == "pod"
    assert not a.attribute(theirs).attributed  # not in the list yet
    path.write_text(json.dumps({"items": [pod(other, {"app": "search"})]}))
    os.utime(path, (1, 1))  # a new modification time, whatever the clock's resolution
    assert a.attribute(theirs).workload == Workload("search", "shop")


def test_rules_come_before_pods(tmp_path: Path) -> None:
    path = tmp_path / "pods.json"
    path.write_text(json.dumps({"items": [pod(UID, {"app": "cart"})]}))
    a = Attributor(parse_rules([{"comm": "envoy", "app": "mesh-proxy"}]), Pods(path))
    assert a.attribute(proc("envoy", cgroup=f"/kubepods/pod{UID}/c")).workload == Workload("mesh-proxy")


def test_processes_from_proc_and_from_the_kernel_when_gone() -> None:
    me = Processes().get(os.getpid(), "python")
    assert me.alive and "pytest" in me.cmdline and me.netns > 0 and me.started is not None
    gone = Processes(Path("/nonexistent"), kernel_cmdline=lambda pid: "app --service=quick-job")
    p = gone.get(4242, "app", netns=7)
    assert (p.alive, p.cmdline, p.netns) == (False, "app --service=quick-job", 7)


def test_cgroup_v2_line() -> None:
    assert read_cgroup("12:pids:/x\n0::/kubepods/pod1/c\n") == "/kubepods/pod1/c"
    assert read_cgroup("12:pids:/only-v1\n") == "/only-v1"


def test_an_exited_process_not_yet_reaped_takes_the_kernels_command_line() -> None:
    # A zombie keeps its /proc directory but its cmdline reads empty: a short-lived client the agent
    # looks up right after its connection closed (before its parent reaped it) was "unattributed".
    child = subprocess.Popen([sys.executable, "-c", "pass", "--service=quick-job"])
    try:
        stat = Path(f"/proc/{child.pid}/stat")
        deadline = time.monotonic() + 60
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":  # exited, not reaped (no poll)
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.01)
        assert Path(f"/proc/{child.pid}/cmdline").read_bytes() == b""
        kept = Processes(kernel_cmdline=lambda pid: "python -c pass --service=quick-job")
        p = kept.get(child.pid, "python", netns=7)
        assert (p.alive, p.cmdline) == (False, "python -c pass --service=quick-job")
        assert Processes().get(child.pid, "python", netns=7).cmdline == ""  # no kernel copy: as before
    finally:
        child.wait()
