"""Print the notebooks' reported test accuracy next to archlab's, from study stores.

    python scripts/reproduction_table.py archlab-runs/keras-mnist-cnn archlab-runs/conv-stacks

Reads each directory's store (what `archlab run` recorded) and the notebooks' printed numbers
shipped in archlab/zoo/notebook_results.json; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from importlib import resources

from archlab import collect_results

# The Keras example's own claim (keras/examples/mnist_cnn.py); no seed notebook printed it.
EXTRA = {"keras-mnist-cnn": {"cnn": {"test_accuracy": 0.9925}}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("directories", nargs="+")
    args = ap.parse_args()
    reported = json.loads(resources.files("archlab").joinpath("zoo/notebook_results.json")
                          .read_text()) | EXTRA
    print("| study | model | notebook test acc | archlab test acc (mean ± std) | 95 % CI | n |"
          " epochs | train time per run |")
    print("|---|---|---|---|---|---|---|---|")
    for d in args.directories:
        results = collect_results(d)
        for m in results.models:
            acc = m.metrics.get("test_accuracy")
            nb = reported.get(results.study, {}).get(m.model, {}).get("test_accuracy")
            nb_text = f"{nb * 100:.2f} %" if nb is not None else "-"
            if acc is None:
                print(f"| {results.study} | {m.model} | {nb_text} | (no finished run) | | 0 | |")
                continue
            mean = f"{acc.mean * 100:.2f} %" + (f" ± {acc.std * 100:.2f}" if acc.n > 1 else "")
            ci = (f"{acc.ci_low * 100:.2f} to {acc.ci_high * 100:.2f} %" if acc.n > 1
                  else "n/a (n = 1)")
            epochs = m.runs[0].epochs_done
            secs = f"{m.train_seconds.mean / 60:.0f} min" if m.train_seconds else "-"
            print(f"| {results.study} | {m.model} | {nb_text} | {mean} | {ci} | {acc.n} | "
                  f"{epochs} | {secs} |")


if __name__ == "__main__":
    main()
