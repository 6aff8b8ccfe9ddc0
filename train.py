"""Train on a CIS mixture with Composer: `composer train.py yamls/cis.yaml [key=value ...]`."""

import sys

from cis_stream.training.train import main

if __name__ == '__main__':
    sys.exit(main())
