import pytest

from fedmedlib.experiments import runs
import torch

from fedmedlib import train
from fedmedlib.models import DPResNet


def test_loss_falls_when_training_on_a_tiny_separable_set():
    torch.manual_seed(0)
    x = torch.randn(64, 3, 28, 28)
    y = torch.arange(64) % 2
    x[y == 1, :, :, :14] += 1.5  # class 1: left half brighter (a spatial cue GroupNorm cannot erase)
    net = DPResNet(num_classes=2, width=8)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    losses = [train.train_epoch(net, opt, x, y, batch_size=16, generator=g) for _ in range(8)]
    assert losses[-1] < 0.5 * losses[0]


def test_evaluate_counts_correct_predictions():
    class Fixed(torch.nn.Module):
        def forward(self, x):
            return torch.stack([x[:, 0, 0, 0], -x[:, 0, 0, 0]], 1)

    x = torch.zeros(4, 3, 28, 28)
    x[:2, 0, 0, 0] = 1.0  # predicted class 0
    x[2:, 0, 0, 0] = -1.0  # predicted class 1
    assert train.evaluate(Fixed(), x, torch.tensor([0, 0, 0, 1]))["accuracy"] == 0.75


def test_batches_cover_every_index_once():
    parts = train.batches(10, 3, torch.Generator().manual_seed(0))
    assert [len(p) for p in parts] == [3, 3, 3, 1]
    assert sorted(torch.cat(parts).tolist()) == list(range(10))
    with pytest.raises(ValueError):
        train.batches(10, 0, None)


def _tiny_run(root, **kw):
    return train.train_centralized(model="dpresnet", width=8, epochs=2, train_subset=256, eval_subset=128,
                                   root=root, progress=False, **kw)


def test_centralized_run_is_deterministic_on_cpu(real_data_root):
    a, b = _tiny_run(real_data_root, seed=3), _tiny_run(real_data_root, seed=3)
    strip = lambda r: [{k: v for k, v in h.items() if k != "seconds"} for h in r["history"]]  # noqa: E731
    assert strip(a) == strip(b)


def test_result_reports_test_accuracy_at_best_validation_epoch_with_provenance(real_data_root):
    r = _tiny_run(real_data_root, seed=0)
    best = max(r["history"], key=lambda h: h["val_accuracy"])
    assert r["best_epoch"] == best["epoch"]
    assert r["test_accuracy_at_best_val"] == best["test_accuracy"]
    assert r["test_accuracy_last"] == r["history"][-1]["test_accuracy"]
    assert r["n_train"] == 256 and r["n_test"] == 128
    assert r["device"] == "cpu" and "provenance" not in r  # the core knows no git: experiments.runs adds it
    with_prov = runs.with_provenance(r)
    assert {"git_commit", "device", "versions"} <= set(with_prov["provenance"])
    assert with_prov["provenance"]["versions"]["torch"].startswith("2.")
    assert r["wall_time_s"] > 0


def test_bad_training_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="epochs must be at least 1"):
        train.train_centralized(epochs=0)
    with pytest.raises(ValueError, match="lr must be positive"):
        train.train_centralized(lr=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_asking_for_cuda_without_a_gpu_says_so():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        train.resolve_device("cuda")
    assert train.resolve_device("auto").type == "cpu"
