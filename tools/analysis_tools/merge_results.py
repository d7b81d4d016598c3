"""Pool the ``results.json`` of several runs of one experiment.

A dataset's evidence may come from several invocations of
``tools/run_experiments.py`` with the same data, preset and teacher (a
seed added later, a method run on its own); this writes one
``results.json`` of all their seeds and methods, which
``tools/demo/ranking.py`` reads::

    python tools/analysis_tools/merge_results.py \\
        docs/results/weight_rule/bccd_defeat_preset.json \\
        docs/results/weight_rule/bccd_pkd_preset.json \\
        --out docs/results/cross_dataset/bccd/results.json

It refuses documents of another setting, of another teacher, or whose
shared runs disagree (see ``visionkd/experiments/results_merge.py``), and
names what differs.
"""
import argparse
import json
import os
import os.path as osp
import sys

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO)

from visionkd.experiments.results_merge import merge_results  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('results', nargs='+', help='results.json files')
    parser.add_argument('--out', required=True)
    parser.add_argument('--methods', nargs='+',
                        help='keep only these methods')
    args = parser.parse_args(argv)
    docs = []
    for path in args.results:
        with open(path) as f:
            docs.append(json.load(f))
    try:
        doc = merge_results(docs)
    except ValueError as err:
        parser.error(f'{err} (documents in the order given: '
                     f'{", ".join(args.results)})')
    if args.methods:
        missing = sorted(set(args.methods) - set(doc['methods']))
        if missing:
            parser.error(f'--methods: {missing} in none of the documents')
        doc['methods'] = {m: doc['methods'][m] for m in args.methods}
    doc['schedule']['merged_from'] = [
        osp.relpath(osp.abspath(p), REPO) for p in args.results]
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(doc, f, indent=2)
        f.write('\n')
    seeds = doc['schedule']['seeds']
    print(f'{args.out}: seeds {seeds}, methods '
          f'{", ".join(doc["methods"])}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
