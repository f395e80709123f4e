"""Reference: the book's TwoLayerNet in NumPy on the same digits split as ``pure-backprop train``.

The book's recipe (chapter 5): weights drawn with std 0.01, one hidden layer of 50 ReLU units,
SGD lr 0.1, batches of 100 drawn at random with replacement, 10,000 iterations, no
augmentation. Prints its train and test accuracy for a few split seeds (``--seed`` of
``pure-backprop train`` picks the same split) and NumPy seeds, so the CLI's figures can be
read against it. Run: ``python benchmarks/book_two_layer_net.py``.
"""

import numpy as np

from pure_backprop.data import load_digits


def book_two_layer_net(dataset, numpy_seed, iterations=10_000, weight_init_std=0.01, lr=0.1, hidden=50, batch=100):
    x, t = dataset.x_train.astype(np.float64), dataset.y_train
    rng = np.random.RandomState(numpy_seed)
    w1, b1 = weight_init_std * rng.randn(x.shape[1], hidden), np.zeros(hidden)
    w2, b2 = weight_init_std * rng.randn(hidden, 10), np.zeros(10)
    for _ in range(iterations):
        mask = rng.choice(len(x), batch)
        xb, tb = x[mask], t[mask]
        a = xb @ w1 + b1
        h = np.maximum(a, 0)
        s = h @ w2 + b2
        p = np.exp(s - s.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        ds = p.copy()
        ds[np.arange(batch), tb] -= 1
        ds /= batch
        da = (ds @ w2.T) * (a > 0)
        w2 -= lr * h.T @ ds
        b2 -= lr * ds.sum(0)
        w1 -= lr * xb.T @ da
        b1 -= lr * da.sum(0)

    def accuracy(images, labels):
        return float(np.mean(np.argmax(np.maximum(images @ w1 + b1, 0) @ w2 + b2, 1) == labels))

    return accuracy(x, t), accuracy(dataset.x_test, dataset.y_test)


def main():
    tests = []
    for split_seed in range(5):
        dataset = load_digits(seed=split_seed)
        for numpy_seed in range(2):
            train, test = book_two_layer_net(dataset, numpy_seed)
            tests.append(test)
            print(f"split seed {split_seed}, numpy seed {numpy_seed}: train {train:.4f}  test {test:.4f}")
    print(f"book TwoLayerNet on digits: test accuracy {min(tests):.4f}-{max(tests):.4f}, mean {np.mean(tests):.4f}")


if __name__ == "__main__":
    main()
