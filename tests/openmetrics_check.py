#!/usr/bin/env python3
"""Validate an OpenMetrics exposition with the reference parser.

Used by tests/it/exporter.rs: promtool only reads the Prometheus 0.0.4 text
format, so the OpenMetrics body (with exemplars) is checked here with the
strict parser of the official Python client (Debian: python3-prometheus-client).
Prints the number of families, samples and exemplars; exits 1 on any error.
"""
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    families = samples = exemplars = 0
    try:
        for family in text_string_to_metric_families(text):
            families += 1
            for s in family.samples:
                samples += 1
                if s.exemplar is not None:
                    exemplars += 1
                    if "run_id" not in s.exemplar.labels:
                        raise ValueError(f"exemplar without run_id on {s.name}")
    except Exception as e:  # the parser raises ValueError with the offending line
        print(f"invalid OpenMetrics: {e}")
        return 1
    print(f"families {families}")
    print(f"samples {samples}")
    print(f"exemplars {exemplars}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
