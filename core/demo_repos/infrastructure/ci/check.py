"""terraform validate and tflint, stand-in: checks resources.json before any plan."""

import ipaddress
import json
import sys
from pathlib import Path

REQUIRED = {"network": ["cidr"], "subnet": ["network", "cidr"], "bucket": [], "dns_zone": ["domain"],
            "postgres": ["subnet", "size", "storage_gb"], "security_group": ["network", "ingress"]}
REFERENCES = {"network": "network", "subnet": "subnet"}
SIZES = ("db.t3.micro", "db.t3.small", "db.t3.medium", "db.m5.large", "db.m5.xlarge")
ENVIRONMENTS = ("dev", "preprod", "prod")

try:
    resources = json.loads(Path("resources.json").read_text())["resources"]
except (ValueError, KeyError) as exc:
    sys.exit(f"resources.json is not valid: {exc}")
errors = []
for name, attrs in sorted(resources.items()):
    found = []
    kind = attrs.get("type")
    if kind not in REQUIRED:
        found.append(f"unknown type {kind!r} (known: {', '.join(REQUIRED)})")
    for key in REQUIRED.get(kind, []):
        if key not in attrs:
            found.append(f"missing {key}")
    for key, wanted in REFERENCES.items():
        if key in attrs and resources.get(attrs[key], {}).get("type") != wanted:
            found.append(f"{key} {attrs[key]!r} is not a {wanted} in resources.json")
    if "cidr" in attrs:
        try:
            net = ipaddress.ip_network(attrs["cidr"])
            parent = resources.get(attrs.get("network", ""), {}).get("cidr")
            if kind == "subnet" and parent and not net.subnet_of(ipaddress.ip_network(parent)):
                found.append(f"{net} is outside its network {parent}")
        except ValueError as exc:
            found.append(f"bad cidr: {exc}")
    if kind == "postgres" and attrs.get("size") not in SIZES:
        found.append(f"size {attrs.get('size')!r} is not one of {', '.join(SIZES)}")
    for env in attrs.get("prevent_destroy", []):
        if env not in ENVIRONMENTS:
            found.append(f"prevent_destroy names {env!r}, which is not an environment")
    for rule in attrs.get("ingress", []):
        port, _, source = rule.partition(" from ")
        try:
            ipaddress.ip_network(source)
            ok = port.split("/")[0].isdigit() and port.split("/")[1] in ("tcp", "udp")
        except (ValueError, IndexError):
            ok = False
        if not ok:
            found.append(f"ingress {rule!r} is not like '443/tcp from 10.0.0.0/8'")
    print(f"  {'✗' if found else '✓'} {name} ({kind})")
    errors += [f"{name}: {problem}" for problem in found]
for error in errors:
    print("Error: " + error)
if errors:
    sys.exit(1)
print(f"Success! {len(resources)} resources are valid.")
