#!/usr/bin/env sh
# Write the broker's credentials for `kubectl apply -k k8s/`: a random password, and the AMQP
# URL the services connect with. The file stays on this machine (k8s/secrets/ is git-ignored);
# kustomize turns it into the Secret `rabbitmq`. An existing file is kept unless --force.
#   k8s/make-secret.sh [--force] [FILE]     (FILE defaults to k8s/secrets/rabbitmq.env)
set -eu
force=no
if [ "${1:-}" = "--force" ]; then force=yes; shift; fi
out="${1:-$(dirname "$0")/secrets/rabbitmq.env}"
if [ -e "$out" ] && [ "$force" = no ]; then
    echo "$out exists; keeping it (--force writes a new password)" >&2
    exit 0
fi
mkdir -p "$(dirname "$out")"
password=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
umask 077
cat > "$out" <<ENV
username=lastmile
password=$password
amqp-url=amqp://lastmile:$password@rabbitmq:5672/%2f
ENV
echo "wrote $out (mode 600)" >&2
