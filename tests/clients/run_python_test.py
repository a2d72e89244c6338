"""Runs one unittest module of tests/clients; exits 77 (CTest: skipped) when
the Debian packages the Python client needs are missing."""

import importlib
import sys
import unittest


def main():
    for module in ("zmq", "google.protobuf", "numpy"):
        try:
            importlib.import_module(module)
        except ImportError as e:
            print("skipped: %s (install the Debian packages in scripts/deps.sh)" % e)
            return 77
    suite = unittest.defaultTestLoader.loadTestsFromName(sys.argv[1])
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    return 0 if result.wasSuccessful() and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
