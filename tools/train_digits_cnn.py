"""Train the course's digits CNN and store it in the package (digits_cnn.pt + digits_cnn.json).

    python tools/train_digits_cnn.py            # writes lib/saliencylab/data/digits_cnn.pt
    python tools/train_digits_cnn.py --out DIR

Training is seeded and deterministic on one machine (a few seconds on one CPU thread); another
CPU gives other weights of about the same accuracy, which is why the weights ship with the
package. The JSON records the held-out accuracy, the settings and a fingerprint of the weights.
Every stored notebook output was made with the shipped weights: retrain only on purpose, then
re-execute the solutions.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from saliencylab.digits import PACKAGED_DATA_DIR, WEIGHTS_FILENAME, save_digits_cnn, train_digits_cnn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PACKAGED_DATA_DIR, help="folder to write to")
    arguments = parser.parse_args()
    started = time.perf_counter()
    model, info = train_digits_cnn()
    path = arguments.out / WEIGHTS_FILENAME
    save_digits_cnn(model, info, path)
    print(
        f"trained in {time.perf_counter() - started:.1f} s; held-out accuracy "
        f"{info['test_accuracy']:.2%} on {info['test_images']} images; wrote {path} "
        f"({path.stat().st_size / 1024:.0f} KiB) and {path.with_suffix('.json').name}"
    )


if __name__ == "__main__":
    main()
