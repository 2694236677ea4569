# The control-plane parts that the one-node cluster (cluster.sh) and the bare control plane
# (control-plane.sh) share: a throw-away CA and certificates, kubeconfigs, and the etcd and
# kube-apiserver command lines. Sourced after versions.sh; nothing here starts anything.

# pki_ca <dir>: a throw-away CA (2 days) and the service-account signing key pair.
pki_ca() {
  mkdir -p "$1"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$1/ca.key" -out "$1/ca.crt" -days 2 \
    -subj /CN=gavel-cluster-ca 2>/dev/null
  openssl genrsa -out "$1/sa.key" 2048 2>/dev/null
  openssl rsa -in "$1/sa.key" -pubout -out "$1/sa.pub" 2>/dev/null
}

# pki_issue <dir> <name> <subject> [subjectAltName]: a server and client certificate signed
# by the CA of <dir>.
pki_issue() {
  local d=$1 name=$2 subject=$3 san=${4:-}
  openssl req -newkey rsa:2048 -nodes -keyout "$d/$name.key" -out "$d/$name.csr" -subj "$subject" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n' >"$d/$name.ext"
  [[ -n $san ]] && echo "subjectAltName=$san" >>"$d/$name.ext"
  openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -out "$d/$name.crt" -days 2 -extfile "$d/$name.ext" 2>/dev/null
}

# write_kubeconfig <file> <server URL> <pki dir> <user>: a kubeconfig authenticating with
# the client certificate <pki dir>/<user>.crt.
write_kubeconfig() {
  cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: gavel
  cluster: {server: "$2", certificate-authority: "$3/ca.crt"}
users:
- name: $4
  user: {client-certificate: "$3/$4.crt", client-key: "$3/$4.key"}
contexts:
- name: gavel
  context: {cluster: gavel, user: $4}
current-context: gavel
KC
}

# etcd_args <data dir> <client port> <peer port>: sets ETCD_ARGS, an etcd for tests (no fsync).
etcd_args() {
  local c=http://127.0.0.1:$2 p=http://127.0.0.1:$3
  ETCD_ARGS=(--data-dir "$1" --listen-client-urls "$c" --advertise-client-urls "$c"
    --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" --initial-cluster "default=$p"
    --unsafe-no-fsync --quota-backend-bytes=1073741824)
}

# apiserver_args <pki dir> <etcd URL> <bind address> <port> <advertise address> <service CIDR>:
# sets APISERVER_ARGS, the kube-apiserver flags both modes use (TLS from the CA, client
# certificates and service-account tokens, RBAC); each mode adds its own.
apiserver_args() {
  local pki=$1
  APISERVER_ARGS=(--etcd-servers="$2" --bind-address="$3" --secure-port="$4" --advertise-address="$5"
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key"
    --client-ca-file="$pki/ca.crt"
    --service-account-issuer=https://kubernetes.default.svc.cluster.local
    --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key"
    --service-cluster-ip-range="$6" --profiling=false)
}
