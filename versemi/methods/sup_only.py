"""Supervised only: the lower bound on the labeled cases (and, with every training case labeled,
the fully supervised upper bound). Loss: Dice + CE (VerSemi's L_sup) with each sample's prompt."""

from __future__ import annotations

from versemi.losses import supervised_loss

from .base import Method, StepContext, register


@register
class SupOnly(Method):
    name = "sup_only"
    display_name = "Sup-only"
    default_options: dict = {}

    def step(self, ctx: StepContext, lab: dict, unlab: dict | None):
        loss = supervised_loss(ctx.net(lab["image"], lab["task"]), lab["label"])
        return {"loss": loss, "sup": loss.detach()}
