"""Train one of the course's digits CNNs and store it in the package (<name>.pt + <name>.json).

    python tools/train_digits_cnn.py                                # digits_cnn
    python tools/train_digits_cnn.py --model digits_cnn_shortcut    # lesson 13's shortcut model
    python tools/train_digits_cnn.py --model digits_cnn_shortcut_twin --out DIR

The models (saliencylab.digits.TRAINED_MODEL_NAMES) share one recipe: ``digits_cnn`` on the
digits as they are, lesson 13's two on digits with a planted mark (saliencylab.shortcut).
Training is seeded and deterministic on one machine (a few seconds on one CPU thread); another
CPU gives other weights of about the same accuracy, which is why the weights ship with the
package. The JSON records the held-out accuracies, the settings and a fingerprint of the weights.
Every stored notebook output was made with the shipped weights: retrain only on purpose, then
re-execute the solutions that use the model.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from saliencylab.digits import PACKAGED_DATA_DIR, TRAINED_MODEL_NAMES, save_digits_cnn, trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=TRAINED_MODEL_NAMES, default="digits_cnn", help="which model to train")
    parser.add_argument("--out", type=Path, default=PACKAGED_DATA_DIR, help="folder to write to")
    arguments = parser.parse_args()
    started = time.perf_counter()
    model, info = trainer(arguments.model)()
    path = arguments.out / f"{arguments.model}.pt"
    save_digits_cnn(model, info, path)
    accuracies = ", ".join(f"{key} {value:.2%}" for key, value in info.items() if "accuracy" in key or "follows" in key)
    print(
        f"trained {arguments.model} in {time.perf_counter() - started:.1f} s; held-out {accuracies}; "
        f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB) and {path.with_suffix('.json').name}"
    )


if __name__ == "__main__":
    main()
