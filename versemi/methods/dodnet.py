"""DoDNet (Zhang et al., CVPR 2021), the universal model whose dynamic head VerSemi adopts, after the
released repository jianpengz/DoDNet (``a_DynConv/unet3D_DynConv882.py``: the task one-hot concatenated
with the pooled bottleneck, a 1x1x1 controller that emits the parameters of three dynamic 1x1x1
convolutions 8 -> 8 -> 8 -> 2 applied per sample; ``a_DynConv/train.py``: the training).

**It is this companion's network with a switch, not a new one.** VerSemi's prompted head
(``versemi/model.py``: ``GAP`` + ``controller`` -> 180 parameters of a per-sample head 8 -> 8 -> 8 -> 2 and
an unused second 8 -> 2 output) is DoDNet's head; DoDNet is that network trained *fully supervised on the
labeled cases of every dataset at once*: no synthetic task, no L_aux, no unlabeled data. That is the
companion's Uni-Sup-only run (``sup_only`` on several datasets with ``head="dynamic"``), and this module
subclasses it: in the CPU profiles DoDNet and Uni-Sup-only are the same run (the SOTA group trains it once
and names the row after both; :func:`versemi.experiments.sota_configs`), which a test checks step for step.
It is the reference that isolates what VerSemi's additions bring.

What differs is the released training, used in the ``paper`` profile (``paper_settings``): SGD with Nesterov
momentum 0.99 and no weight decay (``torch.optim.SGD(model.parameters(), lr, momentum=0.99,
nesterov=True)``: the ``--weight_decay`` argument is never passed to the optimiser), learning rate 1e-3
with the poly schedule ``lr (1 - epoch / 500) ** 0.9`` set once per epoch (``adjust_learning_rate``), 500
epochs x 250 iterations = 125,000 iterations, batch 2, patch 64^3.

Where this port decides: the backbone is the companion's V-Net (InstanceNorm), not DoDNet's residual
3D U-Net with weight standardisation; the loss is the companion's Dice + CE over the two classes of a
binary task (DoDNet's ``DiceLoss4MOTS`` + ``CELoss4MOTS`` are per-channel sigmoid losses over organ and
tumour channels, which a binary task reduces to one foreground channel); DoDNet's random mirroring and
scaling augmentation and its mixed precision (apex) are not reproduced; the second head output stays
unused, as in VerSemi.
"""

from __future__ import annotations

from .base import build_optimizer, poly_lr, register
from .sup_only import SupOnly


@register
class DoDNet(SupOnly):
    name = "dodnet"
    display_name = "DoDNet"
    universal = True
    default_options = {"poly_exponent": 0.9, "poly_epochs": 500, "nesterov": True}
    # a_DynConv/train.py argparse defaults (lines 56-72): input 64,64,64, batch 2, 500 epochs x 250
    # iterations, learning rate 1e-3, power 0.9; line 127: SGD momentum 0.99, Nesterov, no weight decay
    paper_source = 'jianpengz/DoDNet a_DynConv/train.py lines 56-72 (argparse defaults), 82-90 (poly lr), 127 (SGD)'
    paper_settings = dict(optimizer="sgd", lr=1e-3, momentum=0.99, weight_decay=0.0, lr_step=0, batch_size=2,
                          steps=125000, patch=(64, 64, 64), eval_patch=(64, 64, 64), dropout=0.0)

    @classmethod
    def check_config(cls, cfg) -> None:
        from versemi.utils import VersemiError

        if cfg.task_specific or cfg.head != "dynamic":
            raise VersemiError(f"method {cls.name!r} ({cls.display_name}) is the dynamic-head network trained on "
                               f"several datasets at once; got datasets {list(cfg.datasets)} and head "
                               f"{cfg.head!r} (a single-dataset supervised run is 'sup_only')")

    def build_optimizers(self, cfg, nets):
        """The config's optimiser; SGD with Nesterov momentum as released when the config asks for SGD."""
        return {"net": build_optimizer(cfg, nets["net"].parameters(), nesterov=self.options["nesterov"])}

    def lr_at(self, cfg, optimizer: str, step: int) -> float:
        """The released poly schedule in the paper profile (SGD); in the CPU profiles, whose every method
        uses VerSemi's constant Adam rate, the constant rate — so that DoDNet is Uni-Sup-only there."""
        if cfg.optimizer != "sgd":
            return super().lr_at(cfg, optimizer, step)
        return poly_lr(cfg, step, self.options["poly_epochs"], self.options["poly_exponent"])
