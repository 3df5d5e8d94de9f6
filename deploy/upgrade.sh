#!/usr/bin/env bash
# Upgrades the firehose services on the server without building anything there (a release
# build takes over half an hour on its cores, which the pipeline needs):
#
#   deploy/upgrade.sh root@SERVER           build the image here, ship it (docker save | ssh
#                                           docker load), switch to it
#   deploy/upgrade.sh root@SERVER IMAGE     ship an image you already have (built or pulled)
#   FIREHOSE_PULL=1 deploy/upgrade.sh root@SERVER registry.example/firehose:1.2
#                                           the server pulls it from your registry instead
#
# It also copies deploy/ (the Compose file, configurations, dashboards; never .env or secrets/)
# to /opt/firehose/deploy (FIREHOSE_REMOTE_DIR), then runs deploy/switch-image.sh there: the new
# image goes into .env as FIREHOSE_IMAGE, `docker compose up -d --no-build` replaces what
# changed, and every firehose service must be healthy within HEALTH_TIMEOUT seconds (180);
# if one is not, the previous image is put back and started, and this exits 1.
set -euo pipefail
server=${1:?usage: deploy/upgrade.sh root@SERVER [IMAGE]}
image=${2:-}
remote_dir=${FIREHOSE_REMOTE_DIR:-/opt/firehose/deploy}
timeout=${HEALTH_TIMEOUT:-180}
cd "$(dirname "$0")/.."

if [[ -z $image ]]; then
  image="firehose:$(git rev-parse --short=12 HEAD)"
  git diff --quiet HEAD || image="$image-dirty"
  echo "upgrade: building $image here"
  docker build -f deploy/Dockerfile -t "$image" .
fi
if [[ ${FIREHOSE_PULL:-0} == 1 ]]; then
  echo "upgrade: $server pulls $image"
  ssh "$server" docker pull "$image"
else
  echo "upgrade: shipping $image to $server"
  docker save "$image" | gzip -1 | ssh "$server" 'gunzip | docker load'
fi
echo "upgrade: copying deploy/ to $server:$remote_dir (not .env, not secrets/)"
tar -C deploy --exclude=./.env --exclude=./secrets -czf - . |
  ssh "$server" "mkdir -p '$remote_dir' && tar -C '$remote_dir' -xzf -"
ssh "$server" "bash -s -- '$remote_dir' '$image' '$timeout'" <deploy/switch-image.sh
