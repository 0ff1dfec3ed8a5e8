"""kitchen verify, stand-in: runs test/integration/default/checks.json against the image.

Test kitchen would boot the image and log in; here we read the sealed archive instead.
"""

import hashlib
import json
import sys
import tarfile
from pathlib import Path

archive = Path("build/image.tar.gz")
expected = Path("build/image.tar.gz.sha256").read_text().split()[0]
checks = json.loads(Path("test/integration/default/checks.json").read_text())
print("-----> Verifying <default-image> (reading build/image.tar.gz)")
failures = 0


def report(ok, text):
    global failures
    failures += not ok
    print(("  ✔  " if ok else "  ×  ") + text)


report(hashlib.sha256(archive.read_bytes()).hexdigest() == expected, "archive matches its sha256")
with tarfile.open(archive) as tar:
    for check in checks:
        try:
            member = tar.extractfile("rootfs/" + check["file"])
            text = member.read().decode() if member else ""
        except KeyError:
            text = None
        report(text is not None and check["contains"] in text, check["describe"])
print(f"       Finished verifying <default-image>: {len(checks) + 1} checks, {failures} failures")
sys.exit(1 if failures else 0)
