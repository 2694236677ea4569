# Versions of everything the real-cluster scripts build, and where they are cached (sourced).
# Kubernetes: the newest release whose kubelet still runs on cgroup v1 (with failCgroupV1: false)
# and builds from the Go module proxy; see README "Testing on a real cluster".
KUBE_VERSION=${KUBE_VERSION:-1.37.2}
COREDNS_VERSION=${COREDNS_VERSION:-v1.14.7}
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.3.7}
# The resource metrics API (metrics.k8s.io) the HorizontalPodAutoscaler reads.
METRICS_SERVER_VERSION=${METRICS_SERVER_VERSION:-v0.8.0}
METRICS_SERVER_IMAGE=registry.k8s.io/metrics-server/metrics-server:$METRICS_SERVER_VERSION
GAVEL_CACHE=${GAVEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gavel}
KUBE_CACHE=${GAVEL_KUBE_CACHE:-$GAVEL_CACHE/kube-$KUBE_VERSION}
PAUSE_IMAGE=${PAUSE_IMAGE:-registry.k8s.io/pause:3.10}
# Where a running cluster keeps its state, certificates, logs and pids (outside the clone).
CLUSTER_DIR=${GAVEL_CLUSTER_DIR:-/var/tmp/gavel-cluster}
CLUSTER_NETNS=${GAVEL_CLUSTER_NETNS:-gavel-k8s}
# The node's address (inside its network namespace) and the host end of its veth pair; pod
# and Service ranges, routed from the host to the node. Nothing else is reachable from it.
HOST_IP=10.213.0.1
NODE_IP=10.213.0.2
POD_CIDR=10.214.0.0/24
SERVICE_CIDR=10.215.0.0/24
API_SERVICE_IP=10.215.0.1
NODE_NAME=gavel-node
