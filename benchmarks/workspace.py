"""Measure the workspace of the issue's large cases, each in a fresh process without torch.

Same as ``layoutops bench --workspace``::

    python benchmarks/workspace.py --json workspace.json [--quick] [--cases GLOB]
        [--layout channels_first|channels_last|both] [--workspace-limit BYTES]

The inputs reach 512 MiB (and as much again for the output): run it on a quiet machine,
never from the tests. See ``layoutops.bench.run_workspace`` for the method.
"""

import sys

from layoutops.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "--workspace", *sys.argv[1:]]))
