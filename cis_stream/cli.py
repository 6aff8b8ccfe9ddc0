"""`cis-stream` command line: index, add, weights, inspect."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys

from cis_stream import __version__
from cis_stream.format.publish import BuildLockedError

# A list value that starts with a minus sign, e.g. `--levels -4,8`.
_NEGATIVE_LIST = re.compile(r'-\d[\d,-]*,[\d,-]*')


def _join_negative_lists(argv: list[str]) -> list[str]:
    """`--levels -4,8` as `--levels=-4,8`: argparse takes `-4,8` for an option and answers "expected one
    argument"; joined to its option, the value reaches our own check and its message."""
    joined: list[str] = []
    for arg in argv:
        if joined and _NEGATIVE_LIST.fullmatch(arg) and joined[-1].startswith('--') and '=' not in joined[-1]:
            joined[-1] = f'{joined[-1]}={arg}'
        else:
            joined.append(arg)
    return joined


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(',') if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r}: expected comma-separated integers, e.g. 16,256')


def add_index_arguments(parser: argparse.ArgumentParser) -> None:
    # The defaults are IndexOptions' own (a light import: options are checked before the slow ones).
    from cis_stream.index.options import IndexOptions
    default = IndexOptions()
    parser.add_argument('inputs', nargs='+', metavar='INPUT',
                        help='.jsonl/.json (JSON lines) or .txt files, plain or .gz/.zst/.bz2, directories or '
                             'globs (other files in a directory are skipped and listed)')
    parser.add_argument('--out', required=True,
                        help='directory of the index to publish, or s3://BUCKET/PREFIX to build locally and upload')
    parser.add_argument('--staging', default=None, metavar='DIR',
                        help='with an s3:// --out: where to build before uploading (default: a folder named after '
                             'the URL under $TMPDIR/cis_stream_publish; kept, so a killed upload resumes)')
    parser.add_argument('--embedder', default=default.embedder,
                        help='lsi (fast, model-free), minilm (SBERT all-MiniLM-L6-v2, the paper) or '
                             'package.module:Class (your own)')
    parser.add_argument('--minilm-backend', choices=('torch', 'onnx', 'onnx-int8'), default='torch',
                        help="with --embedder minilm on CPUs: ONNX Runtime in fp32 or int8 (pip install -e '.[onnx]')")
    parser.add_argument('--lsi-features', choices=('tokens', 'words'), default='tokens',
                        help='with --embedder lsi: count token ids and id pairs (fast: no second pass over the '
                             "text), or words and word pairs as scikit-learn's HashingVectorizer does (what lsi "
                             'counted before token ids)')
    parser.add_argument('--levels', type=_int_list, default=default.levels,
                        help='clusters per level, each a multiple of the one above '
                             f"(default {','.join(map(str, default.levels))})")
    parser.add_argument('--window', type=int, default=default.window,
                        help=f'tokens per window (default {default.window})')
    parser.add_argument('--seq-len', type=int, default=None, help='tokens per sample (default: --window)')
    parser.add_argument('--tokenizer', default=None,
                        help='a tokenizer.json or a folder with one (default: GPT-2 BPE)')
    parser.add_argument('--eos-token', default=None, help='end-of-text token of --tokenizer')
    parser.add_argument('--text-field', default=default.text_field,
                        help=f'JSON field holding the text (default {default.text_field})')
    parser.add_argument('--seed', type=int, default=default.seed,
                        help=f'seed of every sample and k-means initialisation (default {default.seed})')
    parser.add_argument('--max-doc-bytes', type=int, default=default.max_doc_bytes,
                        help='longest document (a .jsonl line or a .txt file) indexed; longer ones are rejected '
                             f'and counted (default {default.max_doc_bytes >> 20} MiB; tokenising takes ~200 bytes '
                             'of memory per byte)')
    parser.add_argument('--exclude', nargs='+', action='extend', default=[], metavar='EVAL_FILE',
                        help='evaluation files (same formats as inputs) whose text must not be indexed: '
                             'exact copies are dropped, and every window sharing an --exclude-ngram word '
                             'run with them (repeatable; put it after the inputs)')
    parser.add_argument('--exclude-ngram', type=int, default=default.exclude_ngram, metavar='N',
                        help=f'words in a shared run that drops a window (default {default.exclude_ngram})')
    parser.add_argument('--strict', action='store_true',
                        help='stop at the first bad record, or at a file under the inputs that would be skipped')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing index at --out')
    parser.add_argument('--restart', action='store_true',
                        help='discard an unfinished build of --out instead of resuming it')
    parser.add_argument('--part-bytes', type=int, default=None,
                        help='input bytes per unit of work and of resumption (default: about 1/64 of the '
                             'corpus, 1-64 MB); the index does not depend on it')


def run_index(args: argparse.Namespace) -> int:
    # Options and input paths are checked before the indexer's imports, which take seconds.
    from cis_stream.index.options import IndexOptions
    from cis_stream.text.readers import find_inputs
    config = {'backend': args.minilm_backend} if args.minilm_backend != 'torch' else {}
    if config and args.embedder != 'minilm':
        raise SystemExit(f'--minilm-backend {args.minilm_backend}: only for --embedder minilm')
    if args.lsi_features != 'tokens':
        if args.embedder != 'lsi':
            raise SystemExit(f'--lsi-features {args.lsi_features}: only for --embedder lsi')
        config = {'features': args.lsi_features}
    options = IndexOptions(embedder=args.embedder, embedder_config=config, levels=args.levels, window=args.window,
                           seq_len=args.seq_len, tokenizer=args.tokenizer, eos_token=args.eos_token,
                           text_field=args.text_field, seed=args.seed, exclude=args.exclude,
                           max_doc_bytes=args.max_doc_bytes, exclude_ngram=args.exclude_ngram)
    options.validate()
    find_inputs(args.inputs, args.strict)
    from cis_stream.index.job import build_index
    index = build_index(args.inputs, args.out, options, strict=args.strict, overwrite=args.overwrite,
                        restart=args.restart, part_bytes=args.part_bytes, staging=args.staging)
    # Imported after the build, which imports Streaming at the point it chooses (index/job.py).
    from cis_stream.report.summary import index_summary
    if int(os.environ.get('RANK', '0')) == 0:  # one summary for a distributed run
        print(index_summary(index.manifest))
        print(f'published {args.out} (built in {index.root})' if '://' in args.out else f'published {index.root}')
    return 0


def add_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('inputs', nargs='+', metavar='NEW_INPUT', help='files, directories or globs to add')
    parser.add_argument('--index', required=True, help='the published index to grow')
    parser.add_argument('--out', default=None, help='publish the new version here (default: replace --index)')
    parser.add_argument('--staging', default=None, metavar='DIR',
                        help='with an s3:// --index: where to fetch and grow it before uploading')
    parser.add_argument('--text-field', default=None, help="JSON field holding the text (default: the index's)")
    parser.add_argument('--strict', action='store_true',
                        help='stop at the first bad record, or at a file under the inputs that would be skipped')
    parser.add_argument('--no-decontaminate', dest='decontaminate', action='store_false',
                        help='for an index built with --exclude whose eval files are gone or changed: add without '
                             'screening against them; the new version then no longer claims decontamination')


def run_add(args: argparse.Namespace) -> int:
    from cis_stream.index.add import add_to_index
    from cis_stream.report.summary import add_summary
    index = add_to_index(args.index, args.inputs, args.out, strict=args.strict, text_field=args.text_field,
                         decontaminate=args.decontaminate, staging=args.staging)
    print(add_summary(index.manifest))
    where = args.out or args.index
    print(f'published {where if "://" in where else index.root}; weights made for the previous version must be '
          f'recomputed')
    return 0


def add_weights_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--index', required=True, help='a published index directory')
    parser.add_argument('--specialist', nargs='+', default=[], metavar='FILE',
                        help='specialist sample files (same formats as index inputs)')
    parser.add_argument('--task', action='append', default=[], metavar='FILE[,FILE...]:WEIGHT',
                        help='one task of a multi-task mixture (repeatable), e.g. med.jsonl:0.7')
    parser.add_argument('--level', type=int, default=None,
                        help='tree level of the histogram (0 = top; default: the deepest level whose '
                             'occupied clusters hold at least --min-per-cluster specialist windows on average)')
    parser.add_argument('--min-per-cluster', type=float, default=None,
                        help='specialist windows per occupied cluster for the default level rule')
    parser.add_argument('--smoothing', type=float, default=0.0,
                        help='mix this fraction of the generalist histogram into the target (0..1)')
    parser.add_argument('--max-repeat', type=float, default=None,
                        help='cap expected passes over any leaf for a --tokens budget')
    parser.add_argument('--tokens', type=int, default=None,
                        help='training token budget for --max-repeat and --specialist-repeats')
    parser.add_argument('--specialist-repeats', type=float, default=None, metavar='R',
                        help='mix the specialist sample itself in as one more stream, at the share that shows it '
                             'R times in --tokens, at most --specialist-max-fraction (built beside the weights file '
                             'as NAME.specialist/)')
    parser.add_argument('--specialist-max-fraction', type=float, default=None, metavar='F',
                        help='the most of the mixture --specialist-repeats may give the sample (default: a quarter)')
    parser.add_argument('--specialist-fraction', type=float, default=None, metavar='F',
                        help='mix the specialist sample in at a fixed share F of the mixture (0 < F < 1)')
    parser.add_argument('--no-decontaminate', dest='decontaminate', action='store_false',
                        help="mix the specialist sample in without screening it against the index's eval files "
                             '(by default it is screened, like the index)')
    parser.add_argument('--text-field', default='text',
                        help='JSON field holding the text of the specialist files (default text)')
    parser.add_argument('-o', '--output', required=True, help='the weights file to write (NAME.weights.json)')


def run_weights(args: argparse.Namespace) -> int:
    if args.specialist and args.task:
        raise ValueError('give either --specialist FILE... (one specialist set) or --task FILES:WEIGHT (repeatable: '
                         'a mixture of tasks), not both; to mix the --specialist files in, give them as one more '
                         '--task FILES:WEIGHT with the weight they should have')
    if not args.specialist and not args.task:
        raise ValueError('give --specialist FILE... or at least one --task FILE:WEIGHT')
    from cis_stream.report.summary import weights_summary
    from cis_stream.weights import WeightOptions, compute_weights, parse_task, write_weights
    tasks = [parse_task(spec) for spec in args.task] or [(args.specialist, 1.0)]
    options = WeightOptions(level=args.level, smoothing=args.smoothing, max_repeat=args.max_repeat,
                            tokens=args.tokens, text_field=args.text_field,
                            specialist_repeats=args.specialist_repeats,
                            specialist_fraction=args.specialist_fraction, decontaminate=args.decontaminate,
                            **{key: value for key, value in (('min_per_cluster', args.min_per_cluster),
                                                             ('specialist_max_fraction', args.specialist_max_fraction))
                               if value is not None})
    weights = compute_weights(args.index, tasks, options, args.output)
    write_weights(weights, args.output)
    print(weights_summary(weights))
    print(f'wrote {args.output}')
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f'{text!r}: expected a positive whole number')
    return value


def add_inspect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('index', metavar='INDEX', help='a published index directory')
    parser.add_argument('--weights', default=None, help='a weights file made for INDEX')
    parser.add_argument('--tokens', type=int, default=None,
                        help='token budget for the expected repetition per leaf (default: the '
                             "weights file's budget)")
    parser.add_argument('--html', default=None, metavar='DIR',
                        help='write DIR/index.html and its PNG plots (a self-contained report)')
    parser.add_argument('--top', type=_positive_int, default=10,
                        help='clusters shown in detail in the report (default 10)')


def run_inspect(args: argparse.Namespace) -> int:
    from cis_stream.report.html import write_report
    from cis_stream.report.inspect import inspect_index
    from cis_stream.report.summary import inspection_summary
    inspection = inspect_index(args.index, args.weights, args.tokens)
    print(inspection_summary(inspection))
    if args.html:
        print(f'wrote {write_report(inspection, args.html, args.top)}')
    return 0


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('index', metavar='INDEX', help='a published index directory, or a local= cache of one')


def run_verify(args: argparse.Namespace) -> int:
    from cis_stream.format.verify import verify_index
    report = verify_index(args.index)
    print(report.summary())
    return 1 if report.problems else 0


def add_export_tokenizer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('index', metavar='INDEX', help='a published index directory')
    parser.add_argument('out', metavar='DIR', help='the directory to write (AutoTokenizer.from_pretrained(DIR) '
                                                   "loads it; llm-foundry's tokenizer: name: DIR)")


def run_export_tokenizer(args: argparse.Namespace) -> int:
    from cis_stream.training.tokenizer import export_tokenizer
    tokenizer = export_tokenizer(args.index, args.out)
    print(f'wrote {args.out}: {len(tokenizer):,} tokens, eos and pad {tokenizer.eos_token!r} '
          f'(id {tokenizer.eos_token_id})')
    return 0


def add_cluster_loss_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('path', metavar='FILE', help="the JSON lines of the training callback `cluster_loss`")
    parser.add_argument('--png', metavar='FILE', help='also plot loss against training tokens per cluster')


def run_cluster_loss(args: argparse.Namespace) -> int:
    from cis_stream.report.cluster_loss import cluster_table, plot_cluster_losses, read_cluster_losses
    records = read_cluster_losses(args.path)
    print(cluster_table(records))
    if args.png:
        plot_cluster_losses(records, args.png)
        print(f'wrote {args.png}')
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='cis-stream', description=(
        'Clustered importance sampling for MosaicML Streaming: index a generalist corpus into '
        'clusters, weight them by a specialist sample, train on the mixture.'))
    parser.add_argument('-v', '--verbose', action='store_true', help='log what each stage does')
    parser.add_argument('--version', action='version', version=f'%(prog)s {__version__}')
    sub = parser.add_subparsers(dest='command', required=True)
    add_index_arguments(sub.add_parser('index', help='build a cluster index from generalist text'))
    add_add_arguments(sub.add_parser('add', help='grow an index with new documents (same tree, new version)'))
    add_weights_arguments(sub.add_parser('weights', help='mixture weights from a specialist sample'))
    add_inspect_arguments(sub.add_parser('inspect', help='summarise an index and a mixture; HTML report'))
    add_verify_arguments(sub.add_parser('verify', help='check every shard file against the hashes in its index.json'))
    add_export_tokenizer_arguments(sub.add_parser('export-tokenizer', help="write the index's tokenizer as a "
                                                  'transformers directory (for llm-foundry)'))
    add_cluster_loss_arguments(sub.add_parser('cluster-loss', help='the training loss per cluster that the '
                                              'cluster_loss callback logged: table and plot'))
    return parser


def main(argv: list[str] | None = None) -> int:
    # faiss's OpenMP threads otherwise spin while idle: on a shared 2-core machine each of the
    # tree's many small searches then takes seconds instead of milliseconds. Results are unchanged.
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    args = build_parser().parse_args(_join_negative_lists(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format='%(levelname)s %(name)s: %(message)s')
    handlers = {'index': run_index, 'add': run_add, 'weights': run_weights, 'inspect': run_inspect,
                'verify': run_verify, 'export-tokenizer': run_export_tokenizer, 'cluster-loss': run_cluster_loss}
    try:
        return handlers[args.command](args)
    except (ValueError, FileExistsError, FileNotFoundError, BuildLockedError) as err:
        # Our errors carry the file, line and what to do; a traceback would only hide that.
        print(f'cis-stream {args.command}: error: {err}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'cis-stream {args.command}: interrupted', file=sys.stderr)
        return 130
    except OSError as err:  # e.g. disk full; an index build keeps its finished parts to resume
        where = f': {err.filename}' if err.filename else ''
        after = {'index': '; nothing was published; the work done is kept: run the same command again to resume',
                 'add': '; nothing was published'}.get(args.command, '')
        print(f'cis-stream {args.command}: error: {err.strerror or err}{where}{after}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
