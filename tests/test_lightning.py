"""The Lightning integration, end to end: real ``lightning.Trainer`` fits on the CPU of
a small MLP on the first 512 MNIST training images (vendored), for both scheduler
intervals, and a resume from a checkpoint that continues the scheduler exactly."""

import csv
import math
import subprocess
import sys

import pytest
import torch

lightning = pytest.importorskip("lightning")

from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

from uncertainty_lr import UncertaintyLR  # noqa: E402
from uncertainty_lr.integrations.lightning import UncertaintyCallback, logits_variance  # noqa: E402

BATCH = 32
STEPS_PER_EPOCH = 512 // BATCH  # 16


@pytest.fixture(scope="module")
def mnist_512():
    """The first 512 images of the MNIST training split, standardised (512, 1, 28, 28)."""
    from uncertainty_lr_study.data.mnist import load_mnist

    data = load_mnist()
    return torch.utils.data.TensorDataset(data.x_train[:512], data.y_train[:512])


class Classifier(lightning.LightningModule):
    """A 784-32-10 MLP whose forward returns logits; records the rate of every
    optimizer step (read from the optimizer just before it steps)."""

    def __init__(self, scheduler_config: dict, **scheduler_kwargs):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(784, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
        )
        self.scheduler_config = scheduler_config
        self.scheduler_kwargs = scheduler_kwargs
        self.rates: list[float] = []

    def forward(self, x):  # (B, 1, 28, 28) -> (B, 10) logits
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=False)
        return loss

    def on_before_optimizer_step(self, optimizer):
        self.rates.append(optimizer.param_groups[0]["lr"])

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=1e-2)
        scheduler = UncertaintyLR(optimizer, **self.scheduler_kwargs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler,
                                                          **self.scheduler_config}}


def fit(data, folder, epochs, config, ckpt_path=None, callback=None, **scheduler_kwargs):
    """One CPU fit; returns (module, trainer, logged rows of metrics.csv)."""
    lightning.seed_everything(0, verbose=False)
    module = Classifier(config, **scheduler_kwargs)
    trainer = lightning.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        deterministic=True,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=CSVLogger(folder, name="", version=""),
        log_every_n_steps=1,
        callbacks=[
            callback or UncertaintyCallback("predictive_variance"),
            ModelCheckpoint(dirpath=folder / "ckpt", filename="{epoch}", save_top_k=-1),
        ],
    )
    loader = torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=False)
    trainer.fit(module, loader, ckpt_path=ckpt_path)
    with open(folder / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("lr")]
    return module, trainer, rows


def the_scheduler(trainer) -> UncertaintyLR:
    return trainer.lr_scheduler_configs[0].scheduler


# MNIST's 10-class predictive variance starts near 0.9 and falls as the MLP learns:
# 0.6 gives decreases first, increases later (max_lr above the initial rate allows them).
RULE = dict(threshold=0.6, max_lr=4e-2)


@pytest.mark.filterwarnings("ignore:The dirpath has changed")
@pytest.mark.parametrize(
    "config, decision_interval, decisions",
    [
        # step() after every 2nd batch, a decision every 3rd step(): 4 x 8 // 3
        ({"interval": "step", "frequency": 2}, 3, 10),
        # step() after every epoch, a decision every step(): 4
        ({"interval": "epoch", "frequency": 1}, 1, 4),
    ],
    ids=["step", "epoch"],
)
def test_fit_decides_logs_the_rate_used_and_resumes_exactly(
    mnist_512, tmp_path, config, decision_interval, decisions
):
    full, full_trainer, rows = fit(
        mnist_512, tmp_path / "full", 4, config, decision_interval=decision_interval, **RULE
    )
    sched = the_scheduler(full_trainer)
    assert sched.num_decisions == decisions
    assert sched.num_decreases >= 1 and sched.num_increases >= 1 and len(set(full.rates)) >= 4
    # one logged row per optimizer step: the rate that step used, and its signals
    assert len(rows) == len(full.rates) == 4 * STEPS_PER_EPOCH
    assert [float(r["lr"]) for r in rows] == full.rates
    for r in rows:
        assert 0.0 < float(r["signal/predictive_variance"]) < 0.9
        assert float(r["signal/grad_norm"]) > 0.0 and math.isfinite(float(r["train_loss"]))

    # resume after epoch 2 (the step interval has an observation pending then)
    resumed, resumed_trainer, _ = fit(
        mnist_512,
        tmp_path / "resumed",
        4,
        config,
        ckpt_path=tmp_path / "full" / "ckpt" / "epoch=1.ckpt",
        decision_interval=decision_interval,
        **RULE,
    )
    again = the_scheduler(resumed_trainer)
    assert resumed.rates == full.rates[2 * STEPS_PER_EPOCH :]
    for name in ("num_decisions", "num_decreases", "num_increases", "last_epoch"):
        assert getattr(again, name) == getattr(sched, name), name
    assert again.get_last_lr() == sched.get_last_lr()
    assert again.last_signal == pytest.approx(sched.last_signal, rel=0, abs=0)


def test_grad_norm_signal_and_a_warning_when_the_fit_takes_no_decision(mnist_512, tmp_path):
    callback = UncertaintyCallback("grad_norm", logits_module="net")  # variance logged too
    with pytest.warns(UserWarning, match="no decision in this fit: 16 scheduler steps"):
        module, trainer, rows = fit(
            mnist_512, tmp_path, 1, {"interval": "step"}, callback=callback,
            threshold=0.1, decision_interval=100,
        )
    assert the_scheduler(trainer).num_decisions == 0 and set(module.rates) == {1e-2}
    assert all(float(r["signal/grad_norm"]) > 0 for r in rows)
    assert all(0 < float(r["signal/predictive_variance"]) < 0.9 for r in rows)  # from "net"


def test_callback_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown signal"):
        UncertaintyCallback("entropy")
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="must be an UncertaintyLR"):
        UncertaintyCallback(scheduler=torch.optim.lr_scheduler.StepLR(optimizer, 1))
    with pytest.raises(TypeError, match="variance_fn"):
        logits_variance({"logits": torch.zeros(2, 3)})  # a structure, not logits


def test_importing_the_library_does_not_import_lightning():
    code = "import sys, uncertainty_lr.integrations; print('lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_missing_lightning_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightning", None)  # import lightning -> ImportError
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.delitem(sys.modules, "uncertainty_lr.integrations.lightning", raising=False)
    with pytest.raises(ImportError, match=r'pip install "uncertainty-lr\[lightning\]"'):
        import uncertainty_lr.integrations.lightning  # noqa: F401
