"""tag and share, stand-in: publishes the image to this run's environment.

The AWS CLI would tag the AMI and share it with the account of the environment; here we copy
the archive and write its manifest to $AHEAD_WORKSPACE/$LIVE_ROOT/<environment>/<repo>/.
"""

import json
import os
import shutil
from pathlib import Path

env = os.environ["AHEAD_ENVIRONMENT"]
live = Path(os.environ["AHEAD_WORKSPACE"], os.environ["LIVE_ROOT"], env, os.environ["AHEAD_REPO"])
digest = Path("build/image.tar.gz.sha256").read_text().split()[0]
image_id = "ami-0" + digest[:16]
manifest = {
    "image_id": image_id,
    "name": "orders-base-" + os.environ["AHEAD_COMMIT"][:7],
    "commit": os.environ["AHEAD_COMMIT"],
    "sha256": digest,
    "packages": Path("packages.txt").read_text().split("\n")[:-1],
    "shared_with": env,
    "run": int(os.environ["AHEAD_RUN_ID"]),
}
print(f"aws ec2 create-tags and modify-image-attribute would now tag {image_id} and share it")
print(f"with the {env} account; here we publish it to live/{env}/{os.environ['AHEAD_REPO']}/")
live.mkdir(parents=True, exist_ok=True)
shutil.copyfile("build/image.tar.gz", live / "image.tar.gz")
(live / "image.json.tmp").write_text(json.dumps(manifest, indent=2) + "\n")
os.replace(live / "image.json.tmp", live / "image.json")
print(json.dumps(manifest, indent=2))
