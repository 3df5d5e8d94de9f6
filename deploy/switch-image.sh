#!/usr/bin/env bash
# Runs on the server (deploy/upgrade.sh sends it over ssh; it can also be run there by hand):
#
#   switch-image.sh DEPLOY_DIR IMAGE [TIMEOUT_SECONDS]
#
# Puts IMAGE in DEPLOY_DIR/.env as FIREHOSE_IMAGE, runs `docker compose up -d --no-build`, and
# waits until every firehose service reports healthy (Docker's health check, which is
# `firehose health`). If they are not healthy within the timeout, the previous image goes back
# into .env and is started again, and it exits 1. Only the image is rolled back: configuration
# files copied with the upgrade stay.
set -euo pipefail
dir=${1:?usage: switch-image.sh DEPLOY_DIR IMAGE [TIMEOUT_SECONDS]}
image=${2:?usage: switch-image.sh DEPLOY_DIR IMAGE [TIMEOUT_SECONDS]}
timeout=${3:-180}
services=(ingest write serve maintain)
cd "$dir"
[[ -f .env ]] || { echo "switch-image: no .env in $dir" >&2; exit 2; }
previous=$(sed -n 's/^FIREHOSE_IMAGE=//p' .env | tail -n 1)

set_image() {
  if grep -q '^FIREHOSE_IMAGE=' .env; then
    sed -i "s|^FIREHOSE_IMAGE=.*|FIREHOSE_IMAGE=$1|" .env
  else
    echo "FIREHOSE_IMAGE=$1" >>.env
  fi
}

healthy() {
  local service id status
  for service in "${services[@]}"; do
    id=$(docker compose ps -q "$service")
    [[ -n $id ]] || return 1
    status=$(docker inspect -f '{{.State.Health.Status}}' "$id")
    [[ $status == healthy ]] || return 1
  done
}

wait_healthy() {
  local waited=0
  until healthy; do
    ((waited < timeout)) || return 1
    sleep 5
    waited=$((waited + 5))
  done
}

set_image "$image"
docker compose up -d --no-build
if wait_healthy; then
  echo "switch-image: ${services[*]} healthy on $image"
  exit 0
fi
echo "switch-image: not healthy on $image within ${timeout} s; rolling back to ${previous:-nothing}" >&2
docker compose ps >&2 || true
docker compose logs --tail 20 "${services[@]}" >&2 || true
[[ -n $previous && $previous != "$image" ]] || exit 1
set_image "$previous"
docker compose up -d --no-build
if wait_healthy; then
  echo "switch-image: rolled back; ${services[*]} healthy on $previous" >&2
else
  echo "switch-image: still not healthy on $previous" >&2
fi
exit 1
