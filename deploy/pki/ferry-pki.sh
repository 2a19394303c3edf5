#!/usr/bin/env bash
# Ferry's certificates, in two layouts.
#
# The cluster's control plane (docs/security.md): one CA per role, so that
# each daemon's [tls] ca trusts only the role it must talk to.
#
#   deploy/pki/ferry-pki.sh cluster DIR --host NAME... [--operator NAME]... [--viewer NAME]...
#
#   DIR/orchestrator-ca.pem  issues the orchestrator's certificate; agents trust only it
#   DIR/hosts-ca.pem         issues the hosts' certificates; the orchestrator trusts it
#   DIR/clients-ca.pem       issues operator and viewer certificates (API clients)
#   DIR/orchestrator-{cert,key}.pem  subject O=Ferry, OU=orchestrator, CN=orchestrator
#   DIR/NAME-{cert,key}.pem          OU=host, CN=NAME (SAN DNS:NAME) for each --host
#   DIR/operator-NAME-{cert,key}.pem, DIR/viewer-NAME-{cert,key}.pem  (OU=operator|viewer)
#   DIR/private/*-ca-key.pem         the CA keys (mode 600): keep them off the hosts
# Running it again on DIR adds identities with the CAs already there.
#
# Migration TLS credentials in QEMU's file layout (tls-creds-x509 dir=):
#   ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem, client-key.pem
#
#   deploy/pki/ferry-pki.sh DIR [options]
#     --ca DIR           sign with the CA in DIR (ca-cert.pem, ca-key.pem);
#                        default: create a new CA in DIR
#     --server-san SANS  subjectAltName of the server certificate
#                        (default DNS:localhost,IP:127.0.0.1)
#     --server-cn CN     (default localhost)
#     --client-dn DN     subject of the client certificate
#                        (default /O=Ferry/CN=ferry-migration-client)
#     --expired          certificates valid only in 2020
#
# Keys are ECDSA P-256. The CA key stays in its directory (ca-key.pem, mode 600).
set -euo pipefail

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

if [ "${1:-}" = cluster ]; then
  dir=${2:?usage: ferry-pki.sh cluster DIR --host NAME... [--operator NAME]... [--viewer NAME]...}
  shift 2
  ids=() # role:name
  while [ $# -gt 0 ]; do
    case "$1" in
      --host) ids+=("host:$2"); shift 2 ;;
      --operator) ids+=("operator:$2"); shift 2 ;;
      --viewer) ids+=("viewer:$2"); shift 2 ;;
      *) echo "ferry-pki: unknown option $1" >&2; exit 2 ;;
    esac
  done
  mkdir -p "$dir/private"
  umask 077
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  for ca in orchestrator hosts clients; do
    [ -s "$dir/$ca-ca.pem" ] && continue
    key "$dir/private/$ca-ca-key.pem"
    openssl req -new -x509 -key "$dir/private/$ca-ca-key.pem" -out "$dir/$ca-ca.pem" -days 3650 \
      -subj "/O=Ferry/CN=Ferry $ca CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
  done
  # issue CA FILE-PREFIX ROLE NAME: CAF's mutual TLS uses one certificate both
  # ways, so every identity may serve and connect.
  issue() {
    local ca=$1 out=$2 role=$3 name=$4
    key "$dir/$out-key.pem"
    openssl req -new -key "$dir/$out-key.pem" -out "$work/$out.csr" \
      -subj "/O=Ferry/OU=$role/CN=$name"
    printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\n' \
      "$name" >"$work/$out.ext"
    openssl x509 -req -in "$work/$out.csr" -CA "$dir/$ca-ca.pem" \
      -CAkey "$dir/private/$ca-ca-key.pem" -CAcreateserial -CAserial "$work/$ca.srl" \
      -out "$dir/$out-cert.pem" -days 825 -extfile "$work/$out.ext" 2>/dev/null
  }
  [ -s "$dir/orchestrator-cert.pem" ] || issue orchestrator orchestrator orchestrator orchestrator
  for id in "${ids[@]}"; do
    role=${id%%:*} name=${id#*:}
    case "$name" in
      '' | *[!A-Za-z0-9._-]*) echo "ferry-pki: '$name' is not a name (letters, digits, . _ -)" >&2; exit 2 ;;
    esac
    case $role in
      host) issue hosts "$name" host "$name" ;;
      *) issue clients "$role-$name" "$role" "$name" ;;
    esac
  done
  chmod 644 "$dir"/*.pem
  chmod 600 "$dir"/*-key.pem "$dir"/private/*
  chmod 700 "$dir/private"
  echo "ferry-pki: cluster credentials in $dir"
  exit 0
fi

dir=${1:?usage: ferry-pki.sh DIR [--ca DIR] [--server-san SANS] [--server-cn CN] [--client-dn DN] [--expired]}
shift
ca_dir=
san="DNS:localhost,IP:127.0.0.1"
server_cn=localhost
client_dn="/O=Ferry/CN=ferry-migration-client"
expired=
while [ $# -gt 0 ]; do
  case "$1" in
    --ca) ca_dir=$2; shift 2 ;;
    --server-san) san=$2; shift 2 ;;
    --server-cn) server_cn=$2; shift 2 ;;
    --client-dn) client_dn=$2; shift 2 ;;
    --expired) expired=1; shift ;;
    *) echo "ferry-pki: unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$dir"
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ -z "$ca_dir" ]; then
  ca_dir=$dir
  key "$dir/ca-key.pem"
  openssl req -new -x509 -key "$dir/ca-key.pem" -out "$dir/ca-cert.pem" -days 3650 \
    -subj "/O=Ferry/CN=Ferry migration CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
else
  cp "$ca_dir/ca-cert.pem" "$dir/ca-cert.pem"
fi

# Signs $2.csr into $2-cert.pem with the extensions in file $3.
sign() {
  local name=$1 ext=$2
  if [ -n "$expired" ]; then
    # `openssl ca` is the one that takes explicit dates in OpenSSL 3.0.
    mkdir -p "$work/ca/new"
    : >"$work/ca/index.txt"
    echo 01 >"$work/ca/serial"
    cat >"$work/ca.cnf" <<CNF
[ca]
default_ca = d
[d]
dir = $work/ca
database = \$dir/index.txt
new_certs_dir = \$dir/new
serial = \$dir/serial
default_md = sha256
policy = p
copy_extensions = none
[p]
CNF
    openssl ca -batch -config "$work/ca.cnf" -cert "$ca_dir/ca-cert.pem" \
      -keyfile "$ca_dir/ca-key.pem" -in "$work/$name.csr" -out "$dir/$name-cert.pem" \
      -startdate 20200101000000Z -enddate 20201231000000Z -extfile "$ext" -notext \
      -preserveDN 2>/dev/null
  else
    openssl x509 -req -in "$work/$name.csr" -CA "$ca_dir/ca-cert.pem" \
      -CAkey "$ca_dir/ca-key.pem" -CAcreateserial -CAserial "$work/serial" \
      -out "$dir/$name-cert.pem" -days 825 -extfile "$ext" 2>/dev/null
  fi
}

key "$dir/server-key.pem"
openssl req -new -key "$dir/server-key.pem" -out "$work/server.csr" -subj "/O=Ferry/CN=$server_cn"
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' \
  "$san" >"$work/server.ext"
sign server "$work/server.ext"

key "$dir/client-key.pem"
openssl req -new -key "$dir/client-key.pem" -out "$work/client.csr" -subj "$client_dn"
printf 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n' >"$work/client.ext"
sign client "$work/client.ext"

chmod 644 "$dir"/*-cert.pem
echo "ferry-pki: credentials in $dir"
