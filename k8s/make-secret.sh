#!/usr/bin/env sh
# Write the deployment's secrets for `kubectl apply -k k8s/`, into DIR (default k8s/secrets/,
# git-ignored, so they stay on this machine; kustomize turns them into Secrets):
#   rabbitmq.env   the broker's user, a random password and the AMQP URL the services use
#                  (Secret `rabbitmq`);
#   service-token  a random token internal endpoints require (Secret `lastmile-service-token`).
# Existing files are kept unless --force.
#   k8s/make-secret.sh [--force] [DIR]
set -eu
force=no
if [ "${1:-}" = "--force" ]; then force=yes; shift; fi
dir="${1:-$(dirname "$0")/secrets}"
mkdir -p "$dir"
umask 077
random() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

broker="$dir/rabbitmq.env"
if [ -e "$broker" ] && [ "$force" = no ]; then
    echo "$broker exists; keeping it (--force writes a new password)" >&2
else
    password=$(random 24)
    cat > "$broker" <<ENV
username=lastmile
password=$password
amqp-url=amqp://lastmile:$password@rabbitmq:5672/%2f
ENV
    echo "wrote $broker (mode 600)" >&2
fi

token="$dir/service-token"
if [ -e "$token" ] && [ "$force" = no ]; then
    echo "$token exists; keeping it (--force writes a new token)" >&2
else
    random 32 > "$token"
    echo "wrote $token (mode 600)" >&2
fi
