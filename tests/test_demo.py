"""The demo's terminal story: one line per training epoch, read from the step's real log lines."""

from snapcat.demo import TrainingEcho

# What kfp.local forwards from the train step (Keras verbose=2 and snapcat's phase record).
TRAIN_LOG = """\
INFO snapcat.train.trainer: phase head: epochs 1-5, backbone frozen, learning rate 0.005
Epoch 1/8
8/8 - 15s - 2s/step - loss: 2.1267 - top1: 0.2969 - top3: 0.51 - val_loss: 1.9256 - val_top1: 0.3969 - val_top3: 0.70
Epoch 2/8
8/8 - 9s - 1s/step - loss: 1.5 - top1: 0.5 - top3: 0.8 - val_loss: nan - val_top1: 0.5 - val_top3: 0.9
some other line - loss: 3
"""


def test_one_line_per_epoch_and_phase_with_validation_figures():
    echo = TrainingEcho()
    said = [line for line in map(echo, TRAIN_LOG.splitlines()) if line]
    assert len(said) == 3
    assert "phase head: epochs 1-5" in said[0]
    assert "epoch   1/8" in said[1]
    assert "val loss 1.926" in said[1] and "val top1 0.397" in said[1]
    assert "val top3 0.700" in said[1]
    assert "epoch   2/8" in said[2] and "val loss nan" in said[2]


def test_loss_lines_outside_an_epoch_are_not_echoed():
    echo = TrainingEcho()
    assert echo("12/12 - loss: 0.5 - val_loss: 0.4") is None
