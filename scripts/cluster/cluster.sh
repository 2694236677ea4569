#!/usr/bin/env bash
# A throw-away one-node Kubernetes cluster on this machine, without Docker:
#
#   scripts/cluster/cluster.sh up     start it (binaries from kube-build.sh), print the kubeconfig path
#   scripts/cluster/cluster.sh down   stop everything `up` started and remove its state
#
# Every daemon runs inside one network namespace of its own ($CLUSTER_NETNS, entered with
# nsenter, which keeps /sys/fs/cgroup mounted), joined to the host by a veth pair; the host
# gets routes to the pod and Service ranges through it, and the namespace has no route out.
# Inside: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd (CRI,
# cgroupfs, Debian's runc and CNI plugins: bridge, host-local, loopback, portmap), kubelet
# (cgroup v1 allowed with failCgroupV1: false), kube-proxy (iptables, masquerading all Service
# traffic since the pods share one bridge), and CoreDNS serving cluster.local on the node's
# address (the kubelet's clusterDNS); metrics-server as a pod behind the API server's
# aggregation layer (the HorizontalPodAutoscaler's CPU metrics). Needs root.
#
# `down` stops only the processes whose pids `up` recorded, unmounts what the kubelet and
# containerd mounted under $CLUSTER_DIR, deletes the namespace and routes, and restores the
# kernel tunables the kubelet changes (vm.*, kernel.* are not per-namespace).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/cluster/versions.sh
. scripts/cluster/lib.sh
S=$CLUSTER_DIR
BIN=$KUBE_CACHE/bin
NS=$CLUSTER_NETNS
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
log() { echo "cluster: $*" >&2; }
in_ns() { nsenter --net="/run/netns/$NS" "$@"; }

# Starts "$@" in the namespace in the background, its log in $S/logs/<name>.log.
start() {
  local name=$1; shift
  # nsenter execs the daemon: $! is the daemon's own pid.
  nsenter --net="/run/netns/$NS" "$@" >"$S/logs/$name.log" 2>&1 &
  echo "$!" >"$S/pids/$name"
}

wait_until() {  # <what> <seconds> <command...>
  local what=$1 secs=$2; shift 2
  for _ in $(seq $((secs * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  log "$what did not come up in ${secs}s"; return 1
}

certs() {
  local d=$S/pki
  pki_ca "$d"
  pki_issue "$d" apiserver /CN=kube-apiserver "IP:$NODE_IP,IP:$API_SERVICE_IP,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  pki_issue "$d" admin "/O=system:masters/CN=gavel-admin"
  pki_issue "$d" controller-manager /CN=system:kube-controller-manager
  pki_issue "$d" scheduler /CN=system:kube-scheduler
  pki_issue "$d" kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "IP:$NODE_IP,DNS:$NODE_NAME"
  pki_issue "$d" kube-proxy /CN=system:kube-proxy
  # metrics-server's serving certificate (its APIService's caBundle is the cluster CA).
  pki_issue "$d" metrics-server /CN=metrics-server "DNS:metrics-server.kube-system.svc,DNS:metrics-server.kube-system.svc.cluster.local"
  # The aggregation layer: a CA of its own for the front proxy (the API server's client
  # certificate when it forwards a request to metrics-server, which trusts the user and groups
  # in its request headers only from a certificate of this CA named front-proxy-client).
  pki_ca "$d/front-proxy"
  pki_issue "$d/front-proxy" front-proxy-client /CN=front-proxy-client
  for who in admin controller-manager scheduler kubelet kube-proxy; do
    write_kubeconfig "$S/$who.kubeconfig" "https://$NODE_IP:6443" "$d" "$who"
  done
}

network() {
  ip netns add "$NS"
  ip link add gk8s-host type veth peer name gk8s-node
  ip link set gk8s-node netns "$NS"
  ip addr add "$HOST_IP/30" dev gk8s-host
  ip link set gk8s-host up
  in_ns ip link set lo up
  in_ns ip addr add "$NODE_IP/30" dev gk8s-node
  in_ns ip link set gk8s-node up
  in_ns sysctl -qw net.ipv4.ip_forward=1
  ip route add "$POD_CIDR" via "$NODE_IP"
  ip route add "$SERVICE_CIDR" via "$NODE_IP"
  # Pods must reach the host end of the veth (where the tests run) back through the node;
  # the node itself has only that /30, so there is no way out of it.
}

containerd_config() {
  mkdir -p "$S/cni/net.d" "$S/containerd"
  cat >"$S/cni/net.d/10-gavel.conflist" <<CNI
{"cniVersion": "1.0.0", "name": "gavel", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "dataDir": "$S/cni/ipam", "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
CNI
  cat >"$S/containerd/config.toml" <<TOML
version = 3
root = "$S/containerd/root"
state = "$S/containerd/state"

[grpc]
  address = "$S/containerd.sock"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '$PAUSE_IMAGE'

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '$(command -v runc)'
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['/usr/lib/cni']
    conf_dir = '$S/cni/net.d'

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
TOML
}

kubelet_config() {
  : >"$S/resolv.conf"
  cat >"$S/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$S/containerd.sock
clusterDNS: ["$NODE_IP"]
clusterDomain: cluster.local
resolvConf: $S/resolv.conf
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $S/pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $S/pki/kubelet.crt
tlsPrivateKeyFile: $S/pki/kubelet.key
failSwapOn: false
protectKernelDefaults: false
makeIPTablesUtilChains: false
imageGCHighThresholdPercent: 100
evictionHard: {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%"}
serializeImagePulls: false
podPidsLimit: 4096
YAML
  cat >"$S/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $S/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
iptables: {masqueradeAll: true}
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
YAML
  cat >"$S/Corefile" <<CORE
.:53 {
    errors
    ready 127.0.0.1:8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $S/admin.kubeconfig gavel
        pods insecure
    }
    cache 5
}
CORE
}

up() {
  [[ $(id -u) == 0 ]] || { log "needs root"; exit 1; }
  if [[ -e /run/netns/$NS ]]; then log "namespace $NS exists: scripts/cluster/cluster.sh down first"; exit 1; fi
  for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl etcd coredns containerd containerd-shim-runc-v2 ctr metrics-server; do
    [[ -x $BIN/$b ]] || { log "$BIN/$b missing: scripts/cluster/kube-build.sh"; exit 1; }
  done
  command -v runc >/dev/null && [[ -x /usr/lib/cni/bridge ]] || { log "runc and containernetworking-plugins are needed (apt-get install runc containernetworking-plugins)"; exit 1; }
  rm -rf "$S"; mkdir -p "$S"/{logs,pids,etcd,kubelet}
  for k in "${SYSCTLS[@]}"; do echo "$k=$(sysctl -n "$k")"; done >"$S/sysctls.saved"
  # The pods' network namespaces that exist already are not ours (see down).
  ls /run/netns 2>/dev/null >"$S/netns.before" || true
  log "state in $S, network namespace $NS (node $NODE_IP)"
  certs
  network
  containerd_config
  kubelet_config
  export PATH="$BIN:$PATH"

  etcd_args "$S/etcd" 2379 2380
  start etcd "$BIN/etcd" "${ETCD_ARGS[@]}"
  start containerd "$BIN/containerd" --config "$S/containerd/config.toml"
  wait_until etcd 30 in_ns curl -sf --noproxy '*' http://127.0.0.1:2379/health
  local pki=$S/pki
  apiserver_args "$pki" http://127.0.0.1:2379 0.0.0.0 6443 "$NODE_IP" "$SERVICE_CIDR"
  start kube-apiserver "$BIN/kube-apiserver" "${APISERVER_ARGS[@]}" --authorization-mode=Node,RBAC \
    --allow-privileged=true \
    --kubelet-client-certificate="$pki/admin.crt" --kubelet-client-key="$pki/admin.key" \
    --kubelet-preferred-address-types=InternalIP --enable-admission-plugins=NodeRestriction \
    --requestheader-client-ca-file="$pki/front-proxy/ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$pki/front-proxy/front-proxy-client.crt" --proxy-client-key-file="$pki/front-proxy/front-proxy-client.key" \
    --enable-aggregator-routing=true
  wait_until kube-apiserver 90 "$BIN/kubectl" --kubeconfig "$S/admin.kubeconfig" get --raw /readyz
  start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$S/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$S/controller-manager.kubeconfig" --authorization-kubeconfig="$S/controller-manager.kubeconfig" \
    --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
    --use-service-account-credentials=true --leader-elect=false --bind-address=127.0.0.1 \
    --cluster-cidr="$POD_CIDR" --service-cluster-ip-range="$SERVICE_CIDR"
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$S/scheduler.kubeconfig" \
    --authentication-kubeconfig="$S/scheduler.kubeconfig" --authorization-kubeconfig="$S/scheduler.kubeconfig" \
    --leader-elect=false --bind-address=127.0.0.1
  wait_until containerd 30 "$BIN/ctr" -a "$S/containerd.sock" version
  log "importing images"
  # shellcheck disable=SC2086 # a list of arguments
  for img in $(scripts/cluster/images.sh ${GAVEL_IMAGES_ARGS:-}); do
    in_ns "$BIN/ctr" -a "$S/containerd.sock" -n k8s.io images import "$img" >>"$S/logs/images.log"
  done
  start kubelet "$BIN/kubelet" --config="$S/kubelet.yaml" --kubeconfig="$S/kubelet.kubeconfig" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --root-dir="$S/kubelet" --v=1
  start kube-proxy "$BIN/kube-proxy" --config="$S/kube-proxy.yaml"
  start coredns "$BIN/coredns" -conf "$S/Corefile"
  local k=("$BIN/kubectl" --kubeconfig "$S/admin.kubeconfig")
  wait_until "node $NODE_NAME Ready" 120 sh -c "'$BIN/kubectl' --kubeconfig '$S/admin.kubeconfig' get node $NODE_NAME -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
  # The kubernetes Service's ClusterIP works once kube-proxy has written its rules.
  wait_until "cluster DNS" 60 in_ns curl -sf --noproxy '*' http://127.0.0.1:8181/ready
  metrics_server "${k[@]}"
  "${k[@]}" get nodes -o wide >&2
  echo "$S/admin.kubeconfig"
}

# metrics-server as a pod (scripts/cluster/metrics-server.yaml), registered as the
# metrics.k8s.io APIService. Not waited for: it is Available about 20 s later (its first scrape
# of the kubelet); `kubectl wait apiservice/v1beta1.metrics.k8s.io --for=condition=Available`.
metrics_server() {
  "$@" -n kube-system create secret tls metrics-server-tls --cert="$S/pki/metrics-server.crt" --key="$S/pki/metrics-server.key" >/dev/null
  sed -e "s|__IMAGE__|$METRICS_SERVER_IMAGE|" -e "s|__CA_BUNDLE__|$(base64 -w0 "$S/pki/ca.crt")|" scripts/cluster/metrics-server.yaml | "$@" apply -f - >/dev/null
}

down() {
  [[ -d $S ]] || { ip netns del "$NS" 2>/dev/null || true; return 0; }
  export PATH="$BIN:$PATH"
  # Pods first (their containers are children of containerd-shim, not of our processes).
  # Their network namespaces (/run/netns/cni-*) are named in the sandboxes' specs.
  local podns=()
  if [[ -S $S/containerd.sock && -e /run/netns/$NS ]]; then
    local ctr=("$BIN/ctr" -a "$S/containerd.sock" -n k8s.io)
    for c in $(in_ns "${ctr[@]}" containers ls -q 2>/dev/null); do
      podns+=($(in_ns "${ctr[@]}" containers info "$c" 2>/dev/null | grep -o '"/var/run/netns/cni-[0-9a-f-]*"' | tr -d '"' || true))
    done
    for t in $(in_ns "${ctr[@]}" tasks ls -q 2>/dev/null); do
      in_ns "${ctr[@]}" tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true
    done
  fi
  for name in coredns kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver containerd etcd; do
    [[ -f $S/pids/$name ]] || continue
    local pid; pid=$(cat "$S/pids/$name")
    # The pid is nsenter's; it execs the daemon, so it is the daemon itself.
    kill "$pid" 2>/dev/null || true
  done
  for name in coredns kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver containerd etcd; do
    [[ -f $S/pids/$name ]] || continue
    local pid; pid=$(cat "$S/pids/$name")
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  # containerd-shim processes of our containerd (their command line names our socket).
  for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $S/containerd.sock" || true); do kill -9 "$p" 2>/dev/null || true; done
  # Mounts the kubelet and containerd left under $S, deepest first.
  awk -v s="$S" '$2 ~ "^"s {print $2}' /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  ip route del "$POD_CIDR" 2>/dev/null || true
  ip route del "$SERVICE_CIDR" 2>/dev/null || true
  ip link del gk8s-host 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  # Also those of sandboxes containerd no longer knew about (a run that failed half-way):
  # every cni-* namespace that did not exist before `up`.
  if [[ -f $S/netns.before ]]; then
    for n in /run/netns/cni-*; do
      [[ -e $n ]] && ! grep -qx "$(basename "$n")" "$S/netns.before" && podns+=("$n")
    done
  fi
  for n in $(printf '%s\n' ${podns[@]+"${podns[@]}"} | sort -u); do ip netns del "$(basename "$n")" 2>/dev/null || true; done
  if [[ -f $S/sysctls.saved ]]; then
    while IFS= read -r kv; do sysctl -qw "$kv" 2>/dev/null || true; done <"$S/sysctls.saved"
  fi
  # Pod cgroups the kubelet made (cgroup v1: one tree per controller).
  for c in /sys/fs/cgroup/*/kubepods; do
    [[ -d $c ]] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  rm -rf "$S"
  log "down"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
