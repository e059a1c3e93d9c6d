#!/usr/bin/env python3
"""Baseline for the JUnit parser benchmark: time xml.etree.ElementTree.

Parses FILE N times (full DOM build, as most report tools do), counts
<testcase> elements each time, and prints the throughput in MB/s.

    python3 bench_etree.py FILE [N]

Output (one line, easy to grep):
    etree: FILE bytes=B testcases=T runs=N best=S s median=S s MB/s(best)=X MB/s(median)=Y
MB here is 10^6 bytes.
"""
import statistics
import sys
import time
import xml.etree.ElementTree as ET


def count_testcases(path: str) -> int:
    root = ET.parse(path).getroot()
    # JUnit <testcase>, NUnit <test-case>; namespaces ignored.
    return sum(
        1
        for el in root.iter()
        if isinstance(el.tag, str) and el.tag.rsplit("}", 1)[-1] in ("testcase", "test-case")
    )


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    path = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    if runs < 1:
        print("N must be >= 1", file=sys.stderr)
        return 2
    with open(path, "rb") as f:
        size = len(f.read())
    times = []
    testcases = 0
    for _ in range(runs):
        start = time.perf_counter()
        testcases = count_testcases(path)
        times.append(time.perf_counter() - start)
    best = min(times)
    median = statistics.median(times)
    mb = size / 1e6
    print(
        f"etree: {path} bytes={size} testcases={testcases} runs={runs} "
        f"best={best:.4f} s median={median:.4f} s "
        f"MB/s(best)={mb / best:.1f} MB/s(median)={mb / median:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
