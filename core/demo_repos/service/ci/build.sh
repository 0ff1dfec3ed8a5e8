#!/bin/sh
set -eu
version=$(cat VERSION)
echo "==> building orders $version"
python3 -m py_compile app/*.py
echo "    compiled: $(cd app && echo *.py)"
rm -rf build
mkdir -p build/orders/app
cp app/*.py build/orders/app/
cp VERSION build/orders/
tar -C build -czf build/orders.tar.gz orders
(cd build && sha256sum orders.tar.gz > orders.tar.gz.sha256)
echo "    build/orders.tar.gz: $(wc -c < build/orders.tar.gz | tr -d ' ') bytes, sha256 $(cut -c 1-16 build/orders.tar.gz.sha256)"
