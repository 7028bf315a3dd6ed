"""Session fixture: a real node (containerd and runc, a CNI bridge, a kubelet, kube-controller-manager and
kube-scheduler) joined to the tests' API server, with the agent's image built from the Dockerfile loaded."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from tests.support.faultproxy import TcpFaultProxy
from tests.support.fixtures_kube import (
    EXTERNAL_KUBECONFIG_ENV, REPO_ROOT, SERVICE_CLUSTER_IP_RANGE, KubeApiServer, NodeCredentials, write_kubeconfig)
from tests.support.ports import free_port
from tests.support.processes import setup_script_output, start_logged, stop_process
from tests.support.waiting import wait_for

SCRIPTS = REPO_ROOT / "scripts"
# With an external cluster (CZ_AGENT_TEST_KUBECONFIG), the agent's image its nodes run, loaded beforehand (kind load),
# and the address of this machine its pods reach (kind: the gateway of Docker's `kind` network).
EXTERNAL_IMAGE_ENV = "CZ_AGENT_TEST_IMAGE"
EXTERNAL_HOST_ADDRESS_ENV = "CZ_AGENT_TEST_HOST_ADDRESS"
READY_SECONDS = 120
DRAIN_SECONDS = 60
CNI_RESULTS = Path("/var/lib/cni/results")
CGROUP_ROOT = Path("/sys/fs/cgroup")
HOST_CONTAINERD_STATE = Path("/run/containerd")
# The group the chart's pod runs with (podSecurityContext.fsGroup): what owns the volumes made here.
AGENT_GID = 10001
# The `kubernetes` Service's ClusterIP: there is no kube-proxy, one DNAT rule sends it to the API server.
KUBERNETES_SERVICE_IP = str(next(ipaddress.ip_network(SERVICE_CLUSTER_IP_RANGE).hosts()))


@dataclass(frozen=True)
class NodeNetwork:
    """The node's pod network: a bridge and a /24 of its own, so that two test sessions on one host never meet."""

    name: str
    bridge: str
    subnet: ipaddress.IPv4Network

    @property
    def gateway(self) -> str:
        return str(next(self.subnet.hosts()))


@dataclass(frozen=True)
class KubeNode:
    """A cluster whose pods run: the tests' API server and node, or an external cluster. `network` and `volumes`
    (where hostPath volumes go) are None for an external cluster: its pods are not reachable from here."""

    api: KubeApiServer
    kubectl: Path
    agent_image: str
    network: NodeNetwork | None
    volumes: Path | None

    @property
    def image_repository(self) -> str:
        return self.agent_image.rpartition(":")[0]

    @property
    def image_tag(self) -> str:
        return self.agent_image.rpartition(":")[2]

    def kubectl_run(self, *args: str, input: str | None = None) -> str:
        """kubectl's output as cluster admin; its failure fails the test."""
        done = subprocess.run([str(self.kubectl), f"--kubeconfig={self.api.kubeconfig}", *args],
                              capture_output=True, text=True, input=input)
        if done.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}",
                        pytrace=False)
        return done.stdout

    @contextmanager
    def host_service(self, port: int) -> Iterator[str]:
        """`host:port` at which the pods reach a server listening on 127.0.0.1:`port` of this host (PostgreSQL,
        Prometheus): on the node started here, the bridge's address, translated to the loopback one, the connection
        seen as from 127.0.0.1; for an external cluster, a TCP relay on $CZ_AGENT_TEST_HOST_ADDRESS."""
        if self.network is None:
            with _relay_from_external_pods(port) as address:
                yield address
            return
        network = self.network
        tcp = ["-p", "tcp", "--dport", str(port), "-m", "comment", "--comment", network.name]
        rules = [["PREROUTING", "-s", str(network.subnet), "-d", network.gateway, *tcp,
                  "-j", "DNAT", "--to-destination", f"127.0.0.1:{port}"],
                 ["INPUT", "-s", str(network.subnet), "-d", "127.0.0.1", *tcp,
                  "-j", "SNAT", "--to-source", "127.0.0.1"]]
        with _nat_rules(rules):
            yield f"{network.gateway}:{port}"

    @contextmanager
    def host_path_volume(self, name: str, *, storage_class: str = "", access_mode: str = "ReadWriteOnce",
                         owner_gid: int = AGENT_GID) -> Iterator[None]:
        """A PersistentVolume `name` on a new directory of the node, as a static provisioner makes them (this node
        has no dynamic one). A hostPath volume ignores the pod's fsGroup, so the directory is made as fsGroup would
        leave it: group `owner_gid`, group-writable, setgid. Deleted afterwards (the directory goes with the node)."""
        if self.volumes is None:
            pytest.fail("an external cluster's volumes come from its own storage classes", pytrace=False)
        path = self.volumes / name
        path.mkdir()
        os.chown(path, 0, owner_gid)
        path.chmod(0o2775)
        with _admin(self.api) as admin:
            core = client.CoreV1Api(admin)
            core.create_persistent_volume(client.V1PersistentVolume(
                metadata=client.V1ObjectMeta(name=name),
                spec=client.V1PersistentVolumeSpec(
                    capacity={"storage": "2Gi"}, access_modes=[access_mode], storage_class_name=storage_class,
                    persistent_volume_reclaim_policy="Retain",
                    host_path=client.V1HostPathVolumeSource(path=str(path), type="Directory"))))
            try:
                yield
            finally:
                core.delete_persistent_volume(name)


@contextmanager
def _relay_from_external_pods(port: int) -> Iterator[str]:
    host = os.environ.get(EXTERNAL_HOST_ADDRESS_ENV)
    if not host:
        pytest.fail(f"set {EXTERNAL_HOST_ADDRESS_ENV} to this machine's address as the cluster's pods reach it "
                    "(kind: docker network inspect kind -f '{{(index .IPAM.Config 0).Gateway}}')", pytrace=False)
    relay = TcpFaultProxy(("127.0.0.1", port), host=host)
    try:
        yield f"{host}:{relay.port}"
    finally:
        relay.stop()


@pytest.fixture(scope="session")
def kube_node(kube_apiserver: KubeApiServer) -> Iterator[KubeNode]:
    """$CZ_AGENT_TEST_KUBECONFIG's cluster with $CZ_AGENT_TEST_IMAGE if set, else a node started here: binaries and
    images from scripts/ (cached), everything it mounts, creates and routes removed afterwards."""
    if kube_apiserver.node_credentials is None:
        image = os.environ.get(EXTERNAL_IMAGE_ENV)
        if not image:
            pytest.fail(f"{EXTERNAL_KUBECONFIG_ENV} is set: set {EXTERNAL_IMAGE_ENV} too, to the agent's image "
                        "loaded into that cluster (README: kind)", pytrace=False)
        yield KubeNode(api=kube_apiserver, kubectl=_node_bin_dir() / "kubectl", agent_image=image, network=None,
                       volumes=None)
        return
    with local_node(kube_apiserver) as node:
        yield node


@contextmanager
def local_node(api: KubeApiServer) -> Iterator[KubeNode]:
    """A node started here and joined to `api` (one of ours: started_apiserver), the images of scripts/node-images.sh
    loaded; everything undone afterwards."""
    node_bin = _node_bin_dir()
    setup_script_output(SCRIPTS / "install-node.sh")
    images = dict(line.split() for line in setup_script_output(SCRIPTS / "node-images.sh").splitlines())
    (agent_image,) = [name for name in images if "cz-allocation-agent" in name]
    with started_node(api, bin_dir=node_bin, images=images) as (network, workdir):
        yield KubeNode(api=api, kubectl=node_bin / "kubectl", agent_image=agent_image, network=network,
                       volumes=workdir / "volumes")


def _node_bin_dir() -> Path:
    return Path(setup_script_output(SCRIPTS / "kube-binaries.sh", "node").strip())


@contextmanager
def started_node(api: KubeApiServer, *, bin_dir: Path, images: dict[str, Path]) -> Iterator[tuple[NodeNetwork, Path]]:
    """The node's processes and host state, each undone (in reverse order) even when a later step fails."""
    credentials = api.node_credentials
    assert credentials is not None
    workdir = Path(tempfile.mkdtemp(prefix="cz-agent-node-"))
    network = _free_network(workdir)
    with ExitStack() as undo:
        undo.callback(shutil.rmtree, workdir, ignore_errors=True)
        admin = undo.enter_context(_admin(api))
        undo.callback(_unmount_under, workdir)
        undo.enter_context(_bridge(network))
        undo.enter_context(_apiserver_vip(network, api_port=int(api.url.rpartition(":")[2])))
        cgroup_root = undo.enter_context(_cgroup_root(network.name))
        endpoint = undo.enter_context(_containerd(workdir, network))
        _import_images(endpoint, images, log_path=workdir / "ctr-import.log")
        kubelet = undo.enter_context(_kubelet(bin_dir, api, workdir=workdir, endpoint=endpoint,
                                              cgroup_root=cgroup_root))
        # Runs before the kubelet stops: the pods' sandboxes, mounts and network go with them.
        undo.callback(_drain, admin, endpoint=endpoint, kubelet=kubelet)
        _wait_node_ready(admin, credentials.node_name, kubelet=kubelet, logs=workdir / "kubelet.log")
        undo.enter_context(_controllers(bin_dir, api, workdir=workdir))
        (workdir / "volumes").mkdir()
        yield network, workdir


def _admin(api: KubeApiServer) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(api.kubeconfig))


def _free_network(workdir: Path) -> NodeNetwork:
    """A name from the work directory's, and the first 10.219.x.0/24 no route on this host covers."""
    suffix = workdir.name.rpartition("-")[2].lower()
    routes = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True, check=True).stdout
    taken = [ipaddress.ip_network(line.split()[0], strict=False) for line in routes.splitlines()
             if line and line.split()[0][0].isdigit()]
    for third in range(256):
        subnet = ipaddress.ip_network(f"10.219.{third}.0/24")
        if not any(subnet.overlaps(route) for route in taken):
            return NodeNetwork(name=f"cz-node-{suffix}", bridge=f"czbr-{suffix}"[:15], subnet=subnet)
    pytest.fail("no free 10.219.x.0/24 for the test node's pods", pytrace=False)


def _run(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed ({done.returncode}): {done.stderr}", pytrace=False)


@contextmanager
def _bridge(network: NodeNetwork) -> Iterator[None]:
    """The bridge made before the CNI plugin finds it: the API server's DNAT to 127.0.0.1 needs route_localnet on
    it from the first pod on. Afterwards the bridge goes, with the masquerading chains of any sandbox the CNI plugin
    never got to delete."""
    _run("ip", "link", "add", network.bridge, "type", "bridge")
    try:
        _run("ip", "addr", "add", f"{network.gateway}/{network.subnet.prefixlen}", "dev", network.bridge)
        _run("ip", "link", "set", network.bridge, "up")
        Path(f"/proc/sys/net/ipv4/conf/{network.bridge}/route_localnet").write_text("1")
        yield
    finally:
        _delete_cni_chains(network.name)
        _delete_cni_results(network.name)
        subprocess.run(["ip", "link", "del", network.bridge], capture_output=True)


def _delete_cni_results(network_name: str) -> None:
    """The CNI results cached (host-wide) for the sandboxes of the network that never got their CNI DEL, with those
    of their loopback."""
    for result in CNI_RESULTS.glob(f"{network_name}-*"):
        sandbox = json.loads(result.read_text()).get("containerId", "")
        for path in (result, CNI_RESULTS / f"cni-loopback-{sandbox}-lo"):
            path.unlink(missing_ok=True)


def _delete_cni_chains(network_name: str) -> None:
    rules = subprocess.run(["iptables", "-t", "nat", "-S", "POSTROUTING"], capture_output=True, text=True).stdout
    for rule in rules.splitlines():
        if f'name: \\"{network_name}\\"' in rule or f'name: "{network_name}"' in rule:
            chain = rule.split(" -j ")[-1].split()[0]
            subprocess.run(["iptables", "-t", "nat", *shlex.split(rule.replace("-A", "-D", 1))], capture_output=True)
            subprocess.run(["iptables", "-t", "nat", "-F", chain], capture_output=True)
            subprocess.run(["iptables", "-t", "nat", "-X", chain], capture_output=True)


@contextmanager
def _apiserver_vip(network: NodeNetwork, *, api_port: int) -> Iterator[None]:
    """The pods' in-cluster configuration reaches the loopback-only API server through the `kubernetes` Service's
    ClusterIP: one DNAT rule from the pod network (no kube-proxy)."""
    with _nat_rules([["PREROUTING", "-s", str(network.subnet), "-d", KUBERNETES_SERVICE_IP, "-p", "tcp", "--dport",
                      "443", "-m", "comment", "--comment", network.name, "-j", "DNAT", "--to-destination",
                      f"127.0.0.1:{api_port}"]]):
        yield


@contextmanager
def _nat_rules(rules: list[list[str]]) -> Iterator[None]:
    """Rules appended to the nat table's chains, deleted afterwards."""
    added = []
    try:
        for rule in rules:
            _run("iptables", "-t", "nat", "-A", *rule)
            added.append(rule)
        yield
    finally:
        for rule in added:
            subprocess.run(["iptables", "-t", "nat", "-D", *rule], capture_output=True)


def _remove_empty_directories(top: Path) -> None:
    """`top` and the directories under it, deepest first, as far as they are empty."""
    for directory in sorted((Path(d) for d, _, _ in os.walk(top)), key=lambda d: len(d.parts), reverse=True):
        try:
            directory.rmdir()
        except OSError:
            pass


@contextmanager
def _cgroup_root(name: str) -> Iterator[str]:
    """The kubelet's cgroup root, its own in every hierarchy (cgroup v1 here): another session's kubelet keeps its
    own, and any process of this node's pods still alive at the end is found under it, killed, and the pods'
    cgroups removed with it."""
    made = []
    try:
        for hierarchy in sorted(CGROUP_ROOT.iterdir()):
            if hierarchy.is_dir() and not hierarchy.is_symlink():
                (hierarchy / name).mkdir()
                made.append(hierarchy / name)
        yield f"/{name}"
    finally:
        _kill_cgroup_processes(made)
        for root in made:
            _remove_empty_directories(root)


def _kill_cgroup_processes(roots: list[Path]) -> None:
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline:
        pids = {int(pid) for root in roots for procs in root.rglob("cgroup.procs")
                for pid in procs.read_text().split()}
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


@contextmanager
def _containerd(workdir: Path, network: NodeNetwork) -> Iterator[Path]:
    """Debian's containerd with its own root, state and socket, the CRI plugin on the node's CNI network."""
    run_dir = workdir / "containerd"
    cni_dir = workdir / "cni"
    cni_dir.mkdir()
    (cni_dir / "10-bridge.conflist").write_text(json.dumps(_cni_conflist(network, ipam_dir=run_dir / "ipam")))
    endpoint = run_dir / "containerd.sock"
    config = workdir / "containerd.toml"
    config.write_text(_containerd_config(run_dir, endpoint=endpoint, cni_dir=cni_dir))
    log_path = workdir / "containerd.log"
    process = start_logged(["containerd", "--config", str(config)], log_path=log_path)
    try:
        wait_for(lambda: _ctr(endpoint, "version").returncode == 0, what="containerd to serve", timeout=30,
                 interval=0.1, process=process, logs=log_path)
        yield endpoint
    finally:
        stop_process(process)
        _kill_shims(endpoint)
        # containerd 1.6 keeps shim sockets and runc state under /run/containerd whatever its config says: this
        # node's containers that outlived the drain (a dead kubelet) go, then whatever is left unused or empty
        # (another containerd's files stay).
        _delete_runc_containers(cgroup_root=network.name)
        _remove_unserved_sockets(HOST_CONTAINERD_STATE / "s")
        _remove_empty_directories(HOST_CONTAINERD_STATE)


def _delete_runc_containers(*, cgroup_root: str) -> None:
    """`runc delete --force` (kill, then remove its state and cgroups) of each container under the node's cgroup
    root, and the network namespace a sandbox was given (CNI never deleted it)."""
    for state_file in (HOST_CONTAINERD_STATE / "runc").glob("*/*/state.json"):
        state = json.loads(state_file.read_text())
        if not any(f"/{cgroup_root}/" in path for path in state.get("cgroup_paths", {}).values()):
            continue
        subprocess.run(["runc", "--root", str(state_file.parent.parent), "delete", "--force", state_file.parent.name],
                       capture_output=True)
        for namespace in state["config"].get("namespaces") or []:
            if namespace["type"] == "NEWNET" and Path(namespace.get("path") or "/").parent.name == "netns":
                subprocess.run(["ip", "netns", "del", Path(namespace["path"]).name], capture_output=True)


def _remove_unserved_sockets(directory: Path) -> None:
    """The sockets of shims that are gone: nothing accepts a connection on them any more."""
    for path in directory.glob("*"):
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(path))
            except ConnectionRefusedError:
                path.unlink()


def _containerd_config(run_dir: Path, *, endpoint: Path, cni_dir: Path) -> str:
    # This VM's root lacks CAP_SYS_RESOURCE: runc fails the pause container when asked for oom_score_adj -998;
    # restrict_oom_score_adj clamps it to containerd's own.
    return f"""version = 2
root = "{run_dir}/root"
state = "{run_dir}/state"
[grpc]
  address = "{endpoint}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{run_dir}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10.2"
  stream_server_address = "127.0.0.1"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_dir}"
"""


def _cni_conflist(network: NodeNetwork, *, ipam_dir: Path) -> dict:
    """The bridge plugin (containerd's CRI sets up `lo` itself) on the node's subnet, masquerading outbound."""
    return {"cniVersion": "0.4.0", "name": network.name, "plugins": [
        {"type": "bridge", "bridge": network.bridge, "isGateway": True, "ipMasq": True, "hairpinMode": True,
         "ipam": {"type": "host-local", "dataDir": str(ipam_dir), "routes": [{"dst": "0.0.0.0/0"}],
                  "ranges": [[{"subnet": str(network.subnet), "gateway": network.gateway}]]}},
        {"type": "portmap", "capabilities": {"portMappings": True}}]}


def _ctr(endpoint: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ctr", "--address", str(endpoint), "--namespace", "k8s.io", *args], capture_output=True,
                          text=True)


def _import_images(endpoint: Path, images: dict[str, Path], *, log_path: Path) -> None:
    for name, archive in images.items():
        imported = _ctr(endpoint, "images", "import", str(archive))
        log_path.open("a").write(imported.stdout + imported.stderr)
        if imported.returncode != 0 or name not in _ctr(endpoint, "images", "list", "--quiet").stdout.split():
            pytest.fail(f"ctr images import {archive} did not load {name}:\n{imported.stderr}", pytrace=False)


def _kill_shims(containerd_socket: Path) -> None:
    """containerd's shims outlive it: those serving this containerd go too."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if command and command[0].endswith(b"containerd-shim-runc-v2") and str(containerd_socket).encode() in command:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


@contextmanager
def _kubelet(bin_dir: Path, api: KubeApiServer, *, workdir: Path, endpoint: Path,
             cgroup_root: str) -> Iterator[subprocess.Popen[bytes]]:
    credentials = api.node_credentials
    assert credentials is not None
    kubeconfig = write_kubeconfig(workdir / "kubelet.kubeconfig", url=api.url, token=credentials.tokens["kubelet"],
                                  ca_file=api.ca_file)
    config = workdir / "kubelet.yaml"
    config.write_text(yaml.safe_dump(_kubelet_config(credentials, workdir=workdir, endpoint=endpoint,
                                                     cgroup_root=cgroup_root)))
    root = workdir / "kubelet"
    command = [bin_dir / "kubelet", f"--config={config}", f"--kubeconfig={kubeconfig}", f"--root-dir={root}",
               f"--cert-dir={root / 'pki'}", f"--hostname-override={credentials.node_name}"]
    process = start_logged(command, log_path=workdir / "kubelet.log")
    try:
        yield process
    finally:
        stop_process(process)
        _delete_kubelet_chains()


# The chains every kubelet keeps in the host's tables (IPv4 and IPv6); another session's kubelet puts them back
# within seconds when its canary chain goes.
KUBELET_CHAINS = {"filter": ["KUBE-FIREWALL", "KUBE-KUBELET-CANARY"], "nat": ["KUBE-KUBELET-CANARY"],
                  "mangle": ["KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT"]}


def _delete_kubelet_chains() -> None:
    for iptables in ("iptables", "ip6tables"):
        for hook in ("INPUT", "OUTPUT"):
            while subprocess.run([iptables, "-t", "filter", "-D", hook, "-j", "KUBE-FIREWALL"],
                                 capture_output=True).returncode == 0:
                pass
        for table, chains in KUBELET_CHAINS.items():
            for chain in chains:
                subprocess.run([iptables, "-t", table, "-F", chain], capture_output=True)
                subprocess.run([iptables, "-t", table, "-X", chain], capture_output=True)


def _kubelet_config(credentials: NodeCredentials, *, workdir: Path, endpoint: Path, cgroup_root: str) -> dict:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        # This host has cgroup v1 (v2 only at /sys/fs/cgroup/unified): v1beta1 refuses it by default since 1.35.
        "failCgroupV1": False, "cgroupDriver": "cgroupfs", "cgroupRoot": cgroup_root,
        "containerRuntimeEndpoint": f"unix://{endpoint}", "podLogsDir": str(workdir / "pod-logs"),
        "address": "0.0.0.0", "port": free_port(), "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": free_port(),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(credentials.kubelet_client_ca)}},
        "authorization": {"mode": "Webhook"},
        "clusterDomain": "cluster.local", "resolvConf": "/etc/resolv.conf", "failSwapOn": False,
        # The machine is shared: other work's disk use must not evict the tests' pods or collect their images.
        "imageGCHighThresholdPercent": 100,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
    }


def _wait_node_ready(admin: client.ApiClient, name: str, *, kubelet: subprocess.Popen, logs: Path) -> None:
    core = client.CoreV1Api(admin)

    def ready() -> bool:
        try:
            conditions = core.read_node(name).status.conditions or []
        except client.ApiException:
            return False
        return any(c.type == "Ready" and c.status == "True" for c in conditions)

    wait_for(ready, what=f"node {name} to be Ready", timeout=READY_SECONDS, process=kubelet, logs=logs)


@contextmanager
def _controllers(bin_dir: Path, api: KubeApiServer, *, workdir: Path) -> Iterator[None]:
    """kube-controller-manager (Deployments, ReplicaSets, ServiceAccounts, kube-root-ca.crt, volume binding) and
    kube-scheduler, each with its own identity; stopped before the pods are drained, or they would replace them."""
    credentials = api.node_credentials
    assert credentials is not None

    def kubeconfig(component: str) -> Path:
        return write_kubeconfig(workdir / f"{component}.kubeconfig", url=api.url, token=credentials.tokens[component],
                                ca_file=api.ca_file)

    common = ["--leader-elect=false", "--bind-address=127.0.0.1", "--secure-port=0"]
    commands = {
        "kube-controller-manager": [
            f"--kubeconfig={kubeconfig('kube-controller-manager')}", *common, f"--root-ca-file={api.ca_file}",
            f"--service-account-private-key-file={credentials.service_account_key}",
            "--use-service-account-credentials=true", "--controllers=*"],
        "kube-scheduler": [f"--kubeconfig={kubeconfig('kube-scheduler')}", *common],
    }
    with ExitStack() as running:
        for name, args in commands.items():
            process = start_logged([bin_dir / name, *args], log_path=workdir / f"{name}.log")
            running.callback(stop_process, process)
        admin = client.CoreV1Api(running.enter_context(_admin(api)))
        wait_for(lambda: admin.read_namespaced_service_account("default", "default")
                 and admin.read_namespaced_config_map("kube-root-ca.crt", "default"),
                 what="kube-controller-manager to make the default ServiceAccount and kube-root-ca.crt",
                 timeout=READY_SECONDS, ignoring=(OSError, client.ApiException),
                 logs=[workdir / f"{name}.log" for name in commands])
        yield


def _drain(admin: client.ApiClient, *, endpoint: Path, kubelet: subprocess.Popen) -> None:
    """Every pod deleted while the kubelet still runs: it stops their containers and sandboxes (CNI DEL, netns,
    mounts). The kubelet and containerd leave running pods behind when they stop."""
    if kubelet.poll() is not None:
        return
    core = client.CoreV1Api(admin)
    for pod in core.list_pod_for_all_namespaces().items:
        with contextlib.suppress(client.ApiException):
            core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=1)
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline:
        if not (_ctr(endpoint, "tasks", "list", "--quiet").stdout.strip() or core.list_pod_for_all_namespaces().items):
            return
        time.sleep(0.3)


def _unmount_under(workdir: Path) -> None:
    """What the kubelet and containerd left mounted under the work directory (the kubelet bind-mounts its root
    onto itself, then volumes and sandbox shm under it), deepest first."""
    mounted = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for point in sorted((p for p in mounted if p.startswith(f"{workdir}/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
