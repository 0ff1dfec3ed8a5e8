#!/bin/sh
set -eu
version=$(cat VERSION)
if awk -v h="## $version" '$0 == h { found = 1 } END { exit !found }' CHANGELOG.md; then
    echo "CHANGELOG.md has release notes for $version:"
    awk -v h="## $version" '$0 == h { on = 1; next } /^## / { on = 0 } on && NF { print "    " $0 }' CHANGELOG.md
else
    echo "CHANGELOG.md has no section '## $version': production releases need release notes."
    echo "Add them (rename '## Unreleased' if the changes are listed there) and push again."
    exit 1
fi
