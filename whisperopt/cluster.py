"""Ray, the distributed engine behind ``--ray`` (bench and transcribe): connecting to a cluster, and the nodes it has.

Scheduling, transport (the object store, streamed task outputs) and fault handling (task retries) are Ray's; this
module only connects, says what is missing in one line, and names nodes the same way everywhere.
"""

from __future__ import annotations

import os

from .errors import WhisperoptError, first_line

INSTALL = "pip install 'whisperopt[ray]'"


def ray_module():
    """The ``ray`` package, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise WhisperoptError(f"--ray needs Ray, which is not installed: {INSTALL}") from None
    return ray


def connect(address: str | None, log=print):
    """Connect to the Ray cluster at ``address`` (``auto``/None: the one this machine belongs to, else a new local
    one). Returns the ``ray`` module. Workers get whisperopt's own environment (threads are set per task)."""
    ray = ray_module()
    if ray.is_initialized():
        return ray
    kwargs = {"log_to_driver": False, "logging_level": "ERROR", "include_dashboard": False}
    if address in (None, "", "auto"):
        try:
            ray.init(address="auto", **kwargs)
            log(f"ray: connected to the cluster at {ray.get_runtime_context().gcs_address}")
        except ConnectionError:
            ray.init(**kwargs)
            log("ray: no cluster running here; started a local one")
    else:
        _reachable(address)
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise WhisperoptError(f"cannot connect to the Ray cluster at {address}: "
                                  f"{first_line(exc, type(exc).__name__)}") from None
        log(f"ray: connected to the cluster at {address}")
    return ray


def _reachable(address: str, timeout: float = 5.0) -> None:
    """A ``host:port`` head that does not answer is a one-line error within seconds (Ray itself waits minutes for an
    unreachable GCS); other address forms (``ray://``, ``local``) are left to Ray."""
    import socket

    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as exc:
        raise WhisperoptError(f"cannot connect to the Ray cluster at {address}: {exc.strerror or exc} (start it with "
                              "`ray start --head`, or leave ADDRESS out to start a local one)") from None


def ray_error(exc: BaseException) -> str:
    """One line for a Ray error: the last line of the exception it wraps (a task's or an actor's own, which ends in
    the message), or that exception's type where it says nothing."""
    cause = getattr(exc, "cause", None) or exc
    text = str(cause).strip().splitlines()
    return text[-1] if text else type(cause).__name__


def alive_nodes(ray, cpus: int = 1, gpus: int = 0) -> list[dict]:
    """Alive nodes with at least ``cpus`` CPUs (and ``gpus`` GPUs): [{"id", "name", "cpus", "gpus"}], by id."""
    nodes = []
    for n in ray.nodes():
        res = n.get("Resources") or {}
        if n.get("Alive") and res.get("CPU", 0) >= cpus and res.get("GPU", 0) >= gpus:
            nodes.append({"id": n["NodeID"], "name": node_name(n["NodeManagerAddress"], n["NodeID"]),
                          "cpus": int(res.get("CPU", 0)), "gpus": int(res.get("GPU", 0))})
    if not nodes:
        need = f"{cpus} CPUs" + (f" and {gpus} GPU" if gpus else "")
        raise WhisperoptError(f"no node of the Ray cluster has {need} free for one task; lower --threads or add "
                              "nodes")
    return sorted(nodes, key=lambda n: n["id"])


def node_name(ip: str, node_id: str) -> str:
    """How rows and logs name a node: its address and the start of its Ray id (two nodes may share one host)."""
    return f"{ip}/{node_id[:8]}"


def this_node(ray) -> str:
    """The node name of the Ray worker this runs in."""
    ctx = ray.get_runtime_context()
    return node_name(ray.util.get_node_ip_address(), ctx.get_node_id())


def host_name() -> str:
    """The node name of a process outside Ray (the local runner): the host name."""
    return os.uname().nodename
