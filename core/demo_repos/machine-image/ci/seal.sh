#!/bin/sh
# packer's snapshot, stand-in: packer would snapshot the VM's disk into an AMI; we make a tar.
set -eu
echo "==> packer would now stop the VM and snapshot its disk into an AMI;"
echo "    here we seal build/rootfs into build/image.tar.gz"
tar -C build -czf build/image.tar.gz rootfs
(cd build && sha256sum image.tar.gz > image.tar.gz.sha256)
echo "    $(tar -tzf build/image.tar.gz | grep -vc '/$') files, $(wc -c < build/image.tar.gz | tr -d ' ') bytes"
echo "    sha256 $(cut -d ' ' -f 1 build/image.tar.gz.sha256)"
