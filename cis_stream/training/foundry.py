"""llm-foundry's own training entry point on a CIS mixture:

    composer -n 2 -m cis_stream.training.foundry yamls/foundry/cis-mpt.yaml [key=value ...]

This is what llm-foundry's `scripts/train/train.py` does (`train_from_yaml` with the YAML and the
overrides); that script ships with llm-foundry's repository, not its package, so this module
gives it a home that `pip install -e '.[foundry]'` installs. llm-foundry finds the `cis` and
`cis_text` loaders and the `cis_sample_order` and `cis_eval_history` callbacks through entry points.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ('-h', '--help'):
        print('usage: composer [-n N] -m cis_stream.training.foundry CONFIG.yaml [key=value ...]')
        return 0 if argv else 2
    try:
        from llmfoundry.command_utils import train_from_yaml
    except ImportError:
        print("cis_stream.training.foundry: llm-foundry is not installed: pip install -e '.[foundry]' "
              '(or make test-foundry, which makes .venv-foundry)', file=sys.stderr)
        return 2
    try:
        train_from_yaml(argv[0], argv[1:])
    except ValueError as err:  # ours name the key or file and the fix; llm-foundry's say what is wrong
        print(f'cis_stream.training.foundry: error: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
