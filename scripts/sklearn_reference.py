#!/usr/bin/env python3
"""scikit-learn reference for the heads benchmark, on the same cache, same machine, one thread.

Usage: OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 /usr/bin/python3 scripts/sklearn_reference.py CACHE_DIR [--out FILE]
(Debian: apt-get install python3-sklearn — scikit-learn 1.2.1, the version the issue's numbers came from.)
Prints JSON: fit seconds (best of 3), predict seconds per 1000 rows, test accuracy per estimator.
Not run in CI; `npm run bench -- heads` reads its output (data/bench/sklearn.json) when present.
"""
import json, os, sys, time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC, SVC
from sklearn.ensemble import RandomForestClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
import warnings

warnings.filterwarnings("ignore")


SEEDS = range(5)


def best_of(n, fn):
    best = float("inf")
    out = None
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv):
    cache = argv[1]
    out_path = argv[argv.index("--out") + 1] if "--out" in argv else None
    X = np.load(os.path.join(cache, "train_features.npy"))
    y = np.load(os.path.join(cache, "train_labels.npy"))
    Xt = np.load(os.path.join(cache, "test_features.npy"))
    yt = np.load(os.path.join(cache, "test_labels.npy"))
    models = {
        "logreg": lambda: LogisticRegression(C=1.0, max_iter=1000),
        "svm-linear": lambda: LinearSVC(C=1.0),
        "svm": lambda: SVC(C=1.0, kernel="rbf", gamma="scale"),
        "rf": lambda: RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1),
        "knn": lambda: KNeighborsClassifier(n_neighbors=5, n_jobs=1),
        "dense": lambda: MLPClassifier(hidden_layer_sizes=(100,), max_iter=30, random_state=0),
    }
    rows = {}
    for name, make in models.items():
        fit_s, m = best_of(3, lambda: make().fit(X, y))
        pred_s, pred = best_of(3, lambda: m.predict(Xt))
        rows[name] = {
            "fitSeconds": round(fit_s, 4),
            "predictSecondsPer1000": round(pred_s / len(yt) * 1000, 4),
            "accuracy": round(float((pred == yt).mean()), 4),
        }
        if name == "dense":
            # One seed's accuracy moves by +-0.3 points here: compare means over the same 5 seeds.
            accs = [float((MLPClassifier(hidden_layer_sizes=(100,), max_iter=30, random_state=s).fit(X, y).predict(Xt) == yt).mean()) for s in SEEDS]
            rows[name]["accuracySeeds"] = [round(a, 4) for a in accs]
            rows[name]["accuracy"] = round(float(np.mean(accs)), 4)
        print(f"{name}: {rows[name]}", file=sys.stderr)
    result = {"sklearn": sklearn.__version__, "numpy": np.__version__, "threads": 1, "train": list(X.shape), "test": int(len(yt)), "heads": rows,
              "loadAverage1m": os.getloadavg()[0]}
    text = json.dumps(result, indent=2)
    print(text)
    if out_path:
        with open(out_path, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main(sys.argv)
