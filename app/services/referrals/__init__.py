"""Referrals that travel: activation, decisions, `$process-message`, reliable delivery.

`ReferralService` is what `create_app` wires in: the write hooks (ServiceRequest activation, the
Task guard), the operations, and the delivery worker of this process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from app.config import Settings
from app.services.context import FhirContext, WriteHook
from app.services.operations import Operation, OperationCall, OperationResult
from app.services.referrals.config import ReferralConfig
from app.services.referrals.decisions import decision_operations
from app.services.referrals.delivery import DeliveryWorker, resend_operation
from app.services.referrals.directory import Parties
from app.services.referrals.hooks import activation_hook, guard_referral_task
from app.services.referrals.receiving import process_message

__all__ = ["ReferralConfig", "ReferralService"]


class ReferralService:
    def __init__(self, config: ReferralConfig) -> None:
        self.config = config
        self.parties = Parties(config)
        self.worker: DeliveryWorker | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ReferralService:
        return cls(ReferralConfig.from_settings(settings))

    @property
    def write_hooks(self) -> Mapping[str, Sequence[WriteHook]]:
        return {"ServiceRequest": (activation_hook(self.config),), "Task": (guard_referral_task,)}

    @property
    def operations(self) -> list[Operation]:
        config, parties = self.config, self.parties

        async def process(context: FhirContext, call: OperationCall) -> OperationResult:
            return OperationResult(await process_message(context, config, parties, call.body, call.access))

        receive = Operation(
            code="process-message",
            definition="http://hl7.org/fhir/OperationDefinition/MessageHeader-process-message",
            resource_types=None,
            type_level=False,
            instance_level=False,
            system_level=True,
            affects_state=True,
            handler=process,
            documentation="Accepts a referral message Bundle from a partner; answers with the acknowledgement message.",
            requires=(("c", "MessageHeader"),),
        )
        return [receive, *decision_operations(config), resend_operation()]

    def start(self, context: FhirContext) -> None:
        """Start delivering the outbox in the background (the app's lifespan calls this)."""
        self.worker = DeliveryWorker(context, self.config)
        self.worker.start()

    async def stop(self) -> None:
        if self.worker is not None:
            await self.worker.stop()
