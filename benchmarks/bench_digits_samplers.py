"""Few-step samplers on a trained model: digits Fréchet distance at NFE 10/20/50 (issue 11, CPU).

The ``digits`` CLD model (``examples/train_images.py --config digits``) is sampled with SSCS and EM on the
paper's quadratic grid and with the exponential integrators on a power-4 grid (the best CLD grid of
``bench_accuracy.py``); every sampler takes ``NFE - 1`` steps and the denoising step (one more NFE). The
distance is the Fréchet distance in the penultimate features of a small digits classifier
(``examples/train_digits_classifier.py``) between the samples and the training digits.

It also answers whether recovering :math:`\\hat x_0` from the velocity score amplifies network error near
:math:`t = T`: with the mixed score :math:`s = -v/\\Sigma^{vv}_t - \\ell_t\\,\\varepsilon_\\theta`, an error
:math:`\\delta` in the network output moves :math:`\\hat x_0 = D_t u + E_t s` by :math:`E_t \\ell_t \\delta`; the
table lists :math:`|E_t|` and :math:`|E_t \\ell_t|` over :math:`t`.

Run ``python benchmarks/bench_digits_samplers.py --checkpoint outputs/digits --classifier
outputs/digits_classifier.pt``. Results: ``benchmarks/results/digits_samplers_cpu.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, markdown_table, write_results  # noqa: E402

import splitdyn  # noqa: E402
from splitdyn.steps.exponential_weights import DiffusionGeometry  # noqa: E402
from splitdyn_cld.data import load_uint8, to_float, to_uint8  # noqa: E402
from splitdyn_cld.evaluation import (extract_features, feature_statistics, frechet_distance,  # noqa: E402
                                     load_digits_classifier)
from splitdyn_cld.image_training import load_trained_model  # noqa: E402
from splitdyn_cld.kernels import ell  # noqa: E402

#: (label, step name, grid factory of the number of steps)
SAMPLERS = [
    ("SSCS", "sscs", lambda n: splitdyn.QuadraticGrid(n)),
    ("EM", "em", lambda n: splitdyn.QuadraticGrid(n)),
    ("EI-ODE-2", "ei-ode-2", lambda n: splitdyn.PowerGrid(n, 4.0)),
    ("EI-ODE-3", "ei-ode-3", lambda n: splitdyn.PowerGrid(n, 4.0)),
    ("EI-SDE-2", "ei-sde-2", lambda n: splitdyn.PowerGrid(n, 4.0)),
]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="outputs/digits")
    parser.add_argument("--classifier", default="outputs/digits_classifier.pt")
    parser.add_argument("--nfe", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    model = load_trained_model(args.checkpoint)
    cld, score = model.cld, model.score
    classifier = load_digits_classifier(args.classifier)

    def features(images):
        x = images if images.dtype == torch.uint8 else to_uint8(images)
        return classifier.features(to_float(x))

    train = load_uint8("digits", None, train=True, image_size=model.image_shape[-1])
    test = load_uint8("digits", None, train=False, image_size=model.image_shape[-1])
    reference = feature_statistics(extract_features(features, train))
    floor = frechet_distance(reference, extract_features(features, test))
    rows, records = [], []
    for label, name, grid in SAMPLERS:
        for nfe in args.nfe:
            generator = torch.Generator().manual_seed(args.seed)
            tic = time.perf_counter()
            images = []
            for start in range(0, args.num_samples, args.batch_size):
                n = min(args.batch_size, args.num_samples - start)
                out = splitdyn.sample(cld, score, (n, *model.image_shape), grid(nfe - 1), step=name,
                                      generator=generator)
                images.append(out.components()[0].clamp(-1, 1))
                assert out.nfe == nfe, (name, out.nfe, nfe)
            seconds = time.perf_counter() - tic
            fd = frechet_distance(reference, extract_features(features, torch.cat(images)))
            records.append({"sampler": label, "step": name, "nfe": nfe, "digits_fd": fd, "seconds": seconds})
            rows.append([label, nfe, fd, seconds])
            print(f"{label:>9} NFE {nfe:>3}: digits FD {fd:7.3f}  ({seconds:.1f} s)", flush=True)
    # amplification of network error into x0-hat: E_t (per unit score error) and E_t * ell_t (per unit of
    # network output, the mixed score's scale)
    geometry = DiffusionGeometry(cld, cld.initial_covariance("hsm"), score_components=[1])
    times = torch.tensor([1.0, 0.9, 0.7, 0.5, 0.3, 0.1, 0.03, 0.01, 0.001], dtype=torch.float64)
    _, E = geometry.tweedie(times)
    gains = E[..., 0, 0].abs()
    ell_t = ell(cld, times, "hsm")
    amplification = [{"t": float(t), "E_t": float(g), "E_t_ell_t": float(g * e)} for t, g, e in zip(times, gains, ell_t)]
    table = markdown_table(["sampler", "NFE", "digits FD", "seconds"], rows)
    gain_table = markdown_table(["t", "|E_t| (x0-hat per unit score error)", "|E_t ell_t| (per unit network error)"],
                                [[a["t"], a["E_t"], a["E_t_ell_t"]] for a in amplification])
    command = f"python benchmarks/bench_digits_samplers.py {' '.join(sys.argv[1:])}"
    text = (f"Command: `{command}`\n\nModel: `{args.checkpoint}` ({model.step} training steps, EMA weights); "
            f"{args.num_samples} samples per row; real test digits vs training digits score {floor:.3f}.\n\n"
            f"{table}\n\nAmplification of network error into the Tweedie estimate from the velocity score:\n\n"
            f"{gain_table}\n")
    write_results("digits_samplers_cpu", {"settings": vars(args), "training_steps": model.step,
                                          "floor": floor, "results": records, "amplification": amplification},
                  text, args.out)
    print(table)
    print(gain_table)
    return {"results": records, "amplification": amplification}


if __name__ == "__main__":
    main()
