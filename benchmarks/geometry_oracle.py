"""Can the hidden face polygon tell a right key from a wrong one? (issue 10,
faceanon/secure/seal.py)

Format 3 hides each face's polygon as 12 numbers that every key opens: a wrong key gives a
draw from the shipped prior (12 independent standard normals), the right key the real face's
numbers. An attacker testing passphrase guesses against one anonymized photo can still rank the
guesses by how much more "real" than "prior-like" their numbers look. This measures that attack
at its best parametric form: the attacker fits a Gaussian to the numbers of real faces of their
own (half of the photo set) and scores a candidate by the log-likelihood ratio
log p_real(w) - log p_prior(w), summed over the faces of the photo.

    python benchmarks/geometry_oracle.py ../shared/data/celeba-wild --limit 700

Reports the single-face AUC (0.5: no information) and, for photos with k faces, how often the
true key ranks first among 1 + 999 wrong candidates and its median rank.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from faceanon.errors import FaceanonError
from faceanon.faces.finder import FaceFinder
from faceanon.media.io import read_image
from faceanon.secure.seal import PARAMS, W_LIMIT, GeometryPrior, default_prior, to_params


def real_numbers(folder: Path, limit: int, seed: int, prior: GeometryPrior) -> np.ndarray:
    """The 12 hidden numbers of every face found, as the right key opens them."""
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    rng = np.random.default_rng(seed)
    paths = [paths[i] for i in sorted(rng.choice(len(paths), min(limit, len(paths)), False))]
    finder = FaceFinder()
    rows = []
    for path in paths:
        try:
            faces = finder.find(read_image(path).image)
        except FaceanonError:
            continue
        rows += [prior.whiten(to_params(f.geometry.mask)) for f in faces]
    return np.array(rows)


def gaussian_logpdf(x: np.ndarray, mean: np.ndarray, chol: np.ndarray) -> np.ndarray:
    w = np.linalg.solve(chol, (x - mean).T).T
    return np.asarray(-0.5 * (w**2).sum(axis=1) - np.log(np.diag(chol)).sum())


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    scores = np.concatenate([positive, negative])
    ranks = scores.argsort().argsort() + 1.0
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path, help="a folder of real photos (e.g. celeba-wild)")
    parser.add_argument("--limit", type=int, default=700)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    prior: GeometryPrior = default_prior()
    real = real_numbers(args.images, args.limit, args.seed, prior)
    rng.shuffle(real)
    train, test = real[: len(real) // 2], real[len(real) // 2 :]
    # The attacker's model of real faces: a Gaussian fitted on their own half.
    cov = np.cov(train, rowvar=False) + np.eye(train.shape[1]) * 1e-9
    attacker = (train.mean(axis=0), np.linalg.cholesky(cov))
    standard = (np.zeros(PARAMS), np.eye(PARAMS))

    def score(w: np.ndarray) -> np.ndarray:
        return gaussian_logpdf(w, *attacker) - gaussian_logpdf(w, *standard)

    wrong = np.clip(rng.standard_normal((20_000, PARAMS)), -W_LIMIT, W_LIMIT)
    right_scores, wrong_scores = score(test), score(wrong)
    print(
        f"faces: {len(real)} real faces ({len(train)} for the attacker's model, {len(test)} tested)"
    )
    print(f"single face: AUC right vs wrong key = {auc(right_scores, wrong_scores):.3f}")
    print("| faces in the photo | true key ranked first (of 1000) | median rank of the true key |")
    print("|---|---|---|")
    for k in (1, 3, 10):
        firsts, ranks = 0, []
        trials = 300
        for _ in range(trials):
            true = right_scores[rng.choice(len(right_scores), k)].sum()
            guesses = wrong_scores[rng.choice(len(wrong_scores), (999, k))].sum(axis=1)
            rank = 1 + int((guesses >= true).sum())
            firsts += rank == 1
            ranks.append(rank)
        print(f"| {k} | {100 * firsts / trials:.1f}% | {int(np.median(ranks))} |")


if __name__ == "__main__":
    main()
