#!/usr/bin/env bash
# A CA and certificates for a Tern fleet (tests, demos, a first install),
# with the openssl command line. EC P-256 keys; the subject says who a
# certificate is for: an agent's CN is its host id, an operator's OU is
# their role.
#
#   tern-pki.sh init DIR                              DIR/ca.{crt,key}
#   tern-pki.sh coordinator DIR NAME [SAN...]         DIR/coordinator.{crt,key}; SANs like
#                                                     DNS:tern.example.org or IP:10.0.0.5
#   tern-pki.sh agent DIR HOST_ID [KEY=VALUE...]      DIR/agent-HOST_ID.{crt,key} (OU=agent); the
#                                                     host's labels, which services select it by
#   tern-pki.sh operator DIR NAME viewer|operator|admin   DIR/operator-NAME.{crt,key}
#
# Validity: 397 days for the coordinator and agents, 90 for operators (a
# person's key leaks more easily; revoke one early with `ternctl cert deny`).
# TERN_PKI_DAYS overrides it (a negative number makes an already expired
# certificate, for tests). Keys are written 0600.
set -euo pipefail
usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1 dir=$2
shift 2
case $cmd in operator) default_days=90 ;; *) default_days=397 ;; esac
days=${TERN_PKI_DAYS:-$default_days}
mkdir -p "$dir"
umask 077

issue() {  # issue OUT SUBJECT EXTFILE
  local out=$1 subject=$2 ext=$3
  [ -f "$dir/ca.key" ] || { echo "tern-pki: no CA in $dir; run: $0 init $dir" >&2; exit 1; }
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$dir/$out.key" \
    -out "$dir/$out.csr" -subj "$subject" 2>/dev/null
  openssl x509 -req -in "$dir/$out.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -out "$dir/$out.crt" -days "$days" -extfile "$ext" 2>/dev/null
  rm -f "$dir/$out.csr" "$ext"
  chmod 0644 "$dir/$out.crt"
  echo "$dir/$out.crt ($subject, $days days)"
}

case $cmd in
  init)
    if [ -f "$dir/ca.key" ]; then echo "tern-pki: $dir already has a CA; not replacing it" >&2; exit 1; fi
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$dir/ca.key" \
      -out "$dir/ca.crt" -subj "/O=Tern/CN=Tern fleet CA" -days 3650 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    chmod 0644 "$dir/ca.crt"
    echo "$dir/ca.crt (Tern fleet CA)"
    ;;
  coordinator)
    [ $# -ge 1 ] || usage
    name=$1; shift
    sans="DNS:$name,DNS:localhost,IP:127.0.0.1"
    for s in "$@"; do sans="$sans,$s"; done
    ext=$(mktemp)
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=%s\n' \
      "$sans" >"$ext"
    issue coordinator "/O=Tern/OU=coordinator/CN=$name" "$ext"
    ;;
  agent)
    [ $# -ge 1 ] || usage
    host=$1
    shift
    ext=$(mktemp)
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' >"$ext"
    sans=""
    for label in "$@"; do
      case $label in
        *=*) ;;
        *) echo "tern-pki: label \"$label\" must be KEY=VALUE" >&2; rm -f "$ext"; exit 2 ;;
      esac
      case $label in
        *[!A-Za-z0-9._/=-]*) echo "tern-pki: label \"$label\": use letters, digits, '.', '_', '-', '/'" >&2
                             rm -f "$ext"; exit 2 ;;
      esac
      sans="${sans:+$sans,}URI:tern:label:$label"
    done
    [ -z "$sans" ] || printf 'subjectAltName=%s\n' "$sans" >>"$ext"
    issue "agent-$host" "/O=Tern/OU=agent/CN=$host" "$ext"
    ;;
  operator)
    [ $# -eq 2 ] || usage
    case $2 in viewer|operator|admin) ;; *) echo "tern-pki: role must be viewer, operator or admin" >&2; exit 2 ;; esac
    ext=$(mktemp)
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' >"$ext"
    issue "operator-$1" "/O=Tern/OU=$2/CN=$1" "$ext"
    ;;
  *) usage ;;
esac
