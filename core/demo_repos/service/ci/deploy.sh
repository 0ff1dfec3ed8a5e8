#!/bin/sh
# A real pipeline would roll the release out to the environment's cluster; this one unpacks it
# into $AHEAD_WORKSPACE/$LIVE_ROOT/<environment>/<repo>/current and records what is deployed.
set -eu
live="$AHEAD_WORKSPACE/$LIVE_ROOT/$AHEAD_ENVIRONMENT/$AHEAD_REPO"
version=$(cat VERSION)
echo "==> deploying orders $version to $AHEAD_ENVIRONMENT"
echo "    (a rollout to the $AHEAD_ENVIRONMENT cluster, here: unpacking into live/$AHEAD_ENVIRONMENT/$AHEAD_REPO)"
mkdir -p "$live"
rm -rf "$live/next"
mkdir "$live/next"
tar -xzf build/orders.tar.gz -C "$live/next"
rm -rf "$live/current"
mv "$live/next/orders" "$live/current"
rmdir "$live/next"
printf 'version=%s\ncommit=%s\nrun=%s\n' "$version" "$AHEAD_COMMIT" "$AHEAD_RUN_ID" > "$live/RELEASE"
(cd "$live" && find current -type f | sort | sed 's/^/    /')
echo "    live/$AHEAD_ENVIRONMENT/$AHEAD_REPO/RELEASE: version $version"
