"""The tests' single-node cluster for a person to try: `scripts/node-cluster.sh` starts the API server and the node
as the tests do, prints the kubeconfig and the kubectl to use, and stops it all on Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal
import threading

from tests.support.fixtures_kube import started_apiserver
from tests.support.fixtures_node import local_node


def main() -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with started_apiserver() as api, local_node(api) as node, node.host_path_volume("data"):
        print(f"""The single-node cluster is up (node {api.node_credentials.node_name}, image {node.agent_image}).
    export KUBECONFIG={api.kubeconfig}
    alias kubectl={node.kubectl}
    kubectl get nodes
    helm install cz deploy/helm/cz-allocation-agent --namespace cz --create-namespace \\
        --set image.repository={node.image_repository} --set image.tag={node.image_tag} --set image.pullPolicy=Never
The chart's claim binds the one volume made here, `data` (hostPath, 2Gi, ReadWriteOnce): this node has no provisioner.
Ctrl-C (or SIGTERM to process {os.getpid()}) stops it and removes everything it made.""", flush=True)
        stop.wait()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
