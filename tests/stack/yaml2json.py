#!/usr/bin/python3
"""Print a YAML file as JSON (tests/stack_e2e.rs reads Grafana's alert rules
with it; the test crate has no YAML parser). Debian package python3-yaml."""
import json
import sys

import yaml

with open(sys.argv[1], encoding="utf-8") as f:
    json.dump(yaml.safe_load(f), sys.stdout)
