#!/bin/sh
# packer build, stand-in: packer would boot a VM from the base AMI; we assemble build/rootfs.
set -eu
echo "==> packer would now boot a VM from the base AMI and provision it;"
echo "    here we assemble the image's file tree in build/rootfs from rootfs/ and packages.txt"
rm -rf build
mkdir -p build/rootfs/etc
cp -R rootfs/. build/rootfs/
cp packages.txt build/rootfs/etc/image-packages
echo "==> base files:"
(cd build/rootfs && find . -type f | sort | sed 's|^\.|    |')
echo "==> packages ($(grep -c . packages.txt)):"
sed 's/^/    /' packages.txt
