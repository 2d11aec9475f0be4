#!/usr/bin/env python
"""Train the small digits classifier whose features define the download-free "digits Fréchet distance".

    python examples/train_digits_classifier.py --out outputs/digits_classifier.pt

scikit-learn's 8x8 digits (bundled, offline), the fixed 1437/360 train/test split of splitdyn_cld.data,
images mapped to [-1, 1] as for the diffusion model. Training takes well under a minute on a CPU; the test
accuracy is printed and stored in the file. examples/evaluate_images.py then reports the Fréchet distance
between the classifier's penultimate features of generated and of real training digits.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

from splitdyn_cld.data import load_digits_images, to_float
from splitdyn_cld.cli import ScriptParser, nonnegative_int, positive_float, positive_int, user_errors
from splitdyn_cld.evaluation import DigitsClassifier, save_digits_classifier


def _shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random translations by up to one pixel (zero = background -1 padding)."""
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)
    dy, dx = torch.randint(0, 3, (2,), generator=generator).tolist()
    return padded[..., dy:dy + x.shape[-2], dx:dx + x.shape[-1]]


def main(argv: list[str] | None = None) -> int:
    p = ScriptParser(prog="train_digits_classifier.py", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="outputs/digits_classifier.pt")
    p.add_argument("--epochs", type=positive_int, default=40)
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--lr", type=positive_float, default=2e-3)
    p.add_argument("--width", type=positive_int, default=32, help="hidden channels (features: 2 * width)")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    args = p.parse_args(argv)
    with user_errors(p.prog):
        return _train(args)


def _train(args) -> int:

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    x_train, y_train = load_digits_images(train=True, return_labels=True)
    x_test, y_test = load_digits_images(train=False, return_labels=True)
    x_train, x_test = to_float(x_train), to_float(x_test)
    model = DigitsClassifier(channels=1, width=args.width)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    tic = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order), args.batch_size):
            idx = order[start:start + args.batch_size]
            loss = F.cross_entropy(model(_shift(x_train[idx], generator)), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
        train_accuracy = float((model(x_train).argmax(1) == y_train).float().mean())
    save_digits_classifier(args.out, model, test_accuracy=accuracy, train_accuracy=train_accuracy,
                           epochs=args.epochs, seed=args.seed)
    print(f"test accuracy {accuracy:.4f} (train {train_accuracy:.4f}) in {time.perf_counter() - tic:.1f} s; "
          f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
