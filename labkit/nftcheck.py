"""Check nft transactions against this namespace's kernel without applying them:
one JSON string per line on stdin, one JSON answer per line on stdout (null
when the kernel would take it, else nft's error)."""

from __future__ import annotations

import json
import sys

from nmbalance.dataplane.nft import NftTable

if __name__ == "__main__":
    checker = NftTable("nmbalance")
    for line in sys.stdin:
        print(json.dumps(checker.check(json.loads(line))), flush=True)
