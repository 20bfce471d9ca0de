#!/usr/bin/env bash
# Build the GPU (infra/Dockerfile) and CPU (infra/Dockerfile.cpu) images and push them to Artifact
# Registry. Tags: <version>-gpu / <version>-cpu (the version in pyproject.toml, as cluster.yaml and
# infra/k8s/*.yaml expect) and <git sha>-gpu / <git sha>-cpu for traceability.
#
# usage: PROJECT_ID=my-project infra/build_push.sh [--dry-run] [--no-push]
#   PROJECT_ID   Google Cloud project (required)
#   REGION       Artifact Registry region (default europe-west4, same as cluster.yaml)
#   REPOSITORY   Artifact Registry Docker repository (default embedder, created by Terraform)
#   --dry-run    print the commands instead of running them
#   --no-push    build only
# Credentials: docker uses gcloud's credential helper (`gcloud auth configure-docker`), i.e. the
# operator's own login; nothing is read from or written to this repository.
set -euo pipefail

DRY_RUN=0
PUSH=1
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    --no-push) PUSH=0 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "build_push.sh: unknown option '$arg' (use --dry-run, --no-push or --help)" >&2; exit 2 ;;
  esac
done

if [[ -z "${PROJECT_ID:-}" ]]; then
  echo "build_push.sh: set PROJECT_ID to your Google Cloud project, e.g. PROJECT_ID=my-project $0" >&2
  exit 2
fi
REGION="${REGION:-europe-west4}"
REPOSITORY="${REPOSITORY:-embedder}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/pyproject.toml" | head -n 1)"
if [[ -z "$VERSION" ]]; then
  echo "build_push.sh: no 'version = \"...\"' line in $ROOT/pyproject.toml" >&2
  exit 2
fi
SHA="$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo nogit)"
IMAGE="${REGION}-docker.pkg.dev/${PROJECT_ID}/${REPOSITORY}/embedder"

run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '%s\n' "$*"
  else
    "$@"
  fi
}

if [[ "$PUSH" == 1 ]]; then
  run gcloud auth configure-docker "${REGION}-docker.pkg.dev" --quiet
fi
for variant in gpu cpu; do
  dockerfile="infra/Dockerfile"
  [[ "$variant" == cpu ]] && dockerfile="infra/Dockerfile.cpu"
  run docker build --platform linux/amd64 -f "$ROOT/$dockerfile" \
    -t "${IMAGE}:${VERSION}-${variant}" -t "${IMAGE}:${SHA}-${variant}" "$ROOT"
  if [[ "$PUSH" == 1 ]]; then
    run docker push "${IMAGE}:${VERSION}-${variant}"
    run docker push "${IMAGE}:${SHA}-${variant}"
  fi
done
