"""Kubernetes pods: a process's pod from its cgroup path, the pod's workload from pod metadata.

The kubelet puts every container in a cgroup under its pod's, whose name carries the pod UID:

    /kubepods/burstable/pod6b5b4ac8-0a3e-4c34-9c4e-2f0c8d1f5a01/<container id>                (cgroupfs)
    /kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod6b5b4ac8_0a3e_..._5a01.slice/
        cri-containerd-<container id>.scope                                                  (systemd)

Pod metadata comes from a file (``--pods FILE``): a ``PodList`` as ``kubectl get pods -o json`` or the
kubelet's ``/pods`` endpoint write it. The DaemonSet in ``docker/agent/`` keeps it fresh with a
sidecar that lists the node's pods; the file is re-read when it changes. A pod's app is its label
``app.kubernetes.io/name`` (else ``app``, else its owner's name), its cluster (the deployment) the
label ``app.kubernetes.io/instance`` (else the owning ReplicaSet's name without the pod-template hash,
else the pod's namespace).
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from agent.process import Process
from agent.workloads import Workload

log = logging.getLogger("agent.kubernetes")

_POD_UID = re.compile(
    r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?(?:/|$)")


def pod_uid(cgroup: str) -> str | None:
    """The pod UID (dashed form) in a kubelet cgroup path, or None."""
    if "kubepods" not in cgroup:
        return None
    m = _POD_UID.search(cgroup)
    return m.group(1).replace("_", "-") if m else None


def pod_workload(pod: dict[str, Any]) -> Workload | None:
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    owners = meta.get("ownerReferences") or []
    owner = next((o.get("name", "") for o in owners if o.get("controller")), "")
    if not owner and owners:
        owner = owners[0].get("name", "")
    hash_ = labels.get("pod-template-hash", "")
    if hash_ and owner.endswith(f"-{hash_}"):
        owner = owner[: -len(hash_) - 1]  # ReplicaSet name -> Deployment name
    app = labels.get("app.kubernetes.io/name") or labels.get("app") or owner or meta.get("name", "")
    if not app:
        return None
    cluster = labels.get("app.kubernetes.io/instance") or owner or meta.get("namespace", "")
    return Workload(str(app), str(cluster))


class Pods:
    """Pod UID -> workload, from a PodList file re-read when its modification time changes."""

    def __init__(self, path: str | Path, recheck_seconds: float = 2.0) -> None:
        self.path = Path(path)
        self.recheck_seconds = recheck_seconds
        self._mtime: float | None = None
        self._checked = 0.0
        self._by_uid: dict[str, Workload] = {}
        self.unknown_pods = 0
        self._error = ""

    def resolve(self, p: Process) -> Workload | None:
        uid = pod_uid(p.cgroup)
        if uid is None:
            return None
        self._reload()
        w = self._by_uid.get(uid)
        if w is None:
            self.unknown_pods += 1
        return w

    def _reload(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self._mtime is not None and now - self._checked < self.recheck_seconds:
            return
        self._checked = now
        try:
            mtime = self.path.stat().st_mtime
            if mtime == self._mtime:
                return
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            if str(e) != self._error:  # once per distinct problem, not every recheck
                log.warning("pod metadata unreadable", extra={"path": str(self.path), "error": str(e)})
            self._error = str(e)
            return
        self._error = ""
        items = doc.get("items", []) if isinstance(doc, dict) else doc
        by_uid: dict[str, Workload] = {}
        for pod in items if isinstance(items, list) else []:
            if not isinstance(pod, dict):
                continue
            uid = (pod.get("metadata") or {}).get("uid")
            w = pod_workload(pod)
            if isinstance(uid, str) and w is not None:
                by_uid[uid] = w
        self._by_uid, self._mtime = by_uid, mtime
