"""`torchrun ... -m cis_stream.index` / `composer -n N -m cis_stream.index`: `cis-stream index` on every rank.

Takes the same flags as `cis-stream index`. Each process gets its share of the cores before any
library starts a thread pool (`share_cores`), so nothing heavy is imported above it.
"""

import sys

from cis_stream.index.dist import share_cores


def main(argv: list[str] | None = None) -> int:
    share_cores()
    from cis_stream.cli import main as cli_main
    return cli_main(['index', *(sys.argv[1:] if argv is None else argv)])


if __name__ == '__main__':
    sys.exit(main())
