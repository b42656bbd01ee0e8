"""Reads a multi-document YAML stream on stdin and writes only the documents of the given kinds."""
import sys

import yaml

kinds = set(sys.argv[1:])
docs = [d for d in yaml.safe_load_all(sys.stdin) if d and d.get("kind") in kinds]
yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)
