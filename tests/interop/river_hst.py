"""Scores a stream with River's HalfSpaceTrees: score_one, then learn_one, per record.

usage: river_hst.py FEATURES.csv TREES HEIGHT WINDOW SEED

FEATURES.csv has a header `x0,x1,...` and one record per line, every feature in [0, 1] and
present in every record (dense), so River's feature set is complete from the first record.
Prints one score per line.
"""

import csv
import sys

from river.anomaly import HalfSpaceTrees


def main() -> int:
    path, trees, height, window, seed = sys.argv[1], *map(int, sys.argv[2:6])
    model = HalfSpaceTrees(n_trees=trees, height=height, window_size=window, seed=seed)
    out = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            x = {k: float(v) for k, v in row.items()}
            out.append(model.score_one(x))
            model.learn_one(x)
    sys.stdout.write("\n".join(f"{s:.9f}" for s in out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
