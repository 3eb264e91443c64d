"""DriftResponseWorkflow: a drift becomes a decision, a verified PLC write and a work order.

Workflow id `drift-{site}-{plc}-{metric}` with USE_EXISTING on start: a drift storm on one metric
is one workflow. Approvals arrive as the `decide` update, validated against the pending
request (its code is required) and the authorised approvers; the wait is a durable timer.
The write is scheduled only after the approval is recorded (`close_approval`), since the
edge checks that record, and only within the approval's validity.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutType
from temporalio.exceptions import TimeoutError as ActivityTimeoutError
from temporalio.workflow import ParentClosePolicy

from workflows.replies import replied_within

with workflow.unsafe.imports_passed_through():
    from activities.cmms import CmmsActivities
    from activities.events import EventActivities
    from activities.notify import NotifyActivities
    from activities.planning import PlanningActivities
    from activities.plc_write import PlcWriteActivities
    from factorylm.errors import APPROVAL_EXPIRED, PLC_SAFETY_ERRORS
    from factorylm.models.agents import (
        WeaverInput,
        WeaverReport,
    )
    from factorylm.models.approvals import (
        ApprovalDecision,
        CloseApprovalInput,
        PendingApproval,
        RequestApprovalInput,
    )
    from factorylm.models.drift import (
        ActionProposal,
        DriftAlert,
        DriftResponseResult,
        PlanResponseInput,
        RecordEventInput,
        ResponsePlan,
    )
    from factorylm.models.messages import (
        Acknowledgement,
        DeliveryFailure,
        MessageAbout,
        MessageKind,
        SendMessageInput,
    )
    from factorylm.models.outcomes import FollowUpInput
    from factorylm.models.plc_writes import PlcWriteInput, PlcWriteResult
    from factorylm.models.work_orders import OpenWorkOrderInput, WorkOrderPriority, WorkOrderRef
    from factorylm.plant import ActionKind, Policy
    from factorylm.temporal_client import SEVERITY
    from workflows.conductor import ROUTES, Agent, AgentAsk, EventType, agents_for
    from workflows.outcome_followup import OutcomeFollowUpWorkflow

_SHORT = timedelta(seconds=30)
# Opening a work order is a database insert or one CMMS call: a stuck attempt is retried soon.
_WORK_ORDER_TIMEOUT = timedelta(seconds=15)
_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
_PLC_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=5,
    non_retryable_error_types=list(PLC_SAFETY_ERRORS),
)
_WINDOW_TIMEOUTS = (TimeoutType.SCHEDULE_TO_START, TimeoutType.SCHEDULE_TO_CLOSE)
# Runs started before rosters replay the old two-approver path (workflow.patched).
_ROSTER_PATCH = "roster-escalation"
_PRIORITY = {"warning": WorkOrderPriority.LOW, "high": WorkOrderPriority.MEDIUM}
# Agents advise; they must never hold up the safety response. A few attempts, then without them.
_AGENT_TIMEOUT = timedelta(seconds=90)
_AGENT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=5), maximum_attempts=3
)


def _trace_line(alert: DriftAlert) -> list[str]:
    trace_id = alert.trace_context.get("trace_id")
    return [f"Trace: {trace_id}"] if trace_id else []


@workflow.defn
class DriftResponseWorkflow:
    def __init__(self) -> None:
        self._status = "started"
        self._pending: PendingApproval | None = None
        self._decision: ApprovalDecision | None = None
        self._decided_at: datetime | None = None  # when the approval was given
        self._evidence: list[DriftAlert] = []
        self._summary = ""  # the agents' findings, for the people who are asked
        self._brief = ""
        self._unreachable: set[tuple[str, str]] = set()  # (code, address) no channel reached
        self._page_code: str | None = None
        self._page_to: list[str] = []
        self._ack: Acknowledgement | None = None

    @workflow.run
    async def run(self, alert: DriftAlert) -> DriftResponseResult:
        info = workflow.info()
        workflow.upsert_search_attributes([SEVERITY.value_set(alert.severity.value)])
        self._set_status("recording event")
        event_id: int = await workflow.execute_activity_method(
            EventActivities.record_drift_event,
            RecordEventInput(workflow_id=info.workflow_id, alert=alert),
            start_to_close_timeout=_SHORT,
            retry_policy=_RETRY,
        )
        report = await self._consult_agents(event_id, alert)
        self._set_status("planning response")
        plan: ResponsePlan = await workflow.execute_activity_method(
            PlanningActivities.plan_response,
            PlanResponseInput(
                event_id=event_id, alert=alert, proposals=report.proposals if report else []
            ),
            start_to_close_timeout=_SHORT,
            retry_policy=_RETRY,
        )
        proposal = plan.proposal
        outcome = "no_action"
        approved_by: str | None = None
        write: PlcWriteResult | None = None
        notes: list[str] = []

        if proposal is not None:
            notes.append(f"Proposed {proposal.action} ({proposal.policy}): {proposal.reason}")
            go_ahead = False
            if proposal.policy is Policy.NEVER:
                outcome = "refused"
                notes.append(f"{proposal.action} is never executed automatically: refused.")
            elif proposal.policy is Policy.APPROVAL:
                if plan.chain and workflow.patched(_ROSTER_PATCH):
                    go_ahead, approved_by, outcome, asked_list = await self._ask_chain(
                        alert, proposal, plan
                    )
                    if outcome == "not_approved_in_time":
                        notes.append(
                            f"Not approved in time: asked {' then '.join(asked_list)}. "
                            "No PLC write was made."
                        )
                else:
                    go_ahead, approved_by, outcome = await self._ask_approval(alert, proposal, plan)
                if outcome == "not_approved_in_time" and not plan.chain:
                    asked = " then ".join(plan.approvers[:2])
                    notes.append(
                        f"Not approved in time: asked {asked}, "
                        f"{plan.approval_timeout_s / 60:g} min each. No PLC write was made."
                    )
                else:
                    notes.append(
                        f"Approval: {outcome}" + (f" by {approved_by}" if approved_by else "")
                    )
            else:
                go_ahead = True
            if go_ahead:
                write, outcome = await self._execute(proposal, approved_by, plan)
                if write is not None:
                    notes.append(
                        f"Wrote {write.value_written:g} to {write.plc_id}.{write.setpoint} "
                        f"(was {write.value_before}), read back {write.value_read_back:g}."
                    )
                elif outcome in ("approval_expired", "write_expired"):
                    notes.append(
                        f"Not written: the edge did not write it within "
                        f"{plan.approval_validity_s / 60:g} min of the decision "
                        f"({outcome.replace('_', ' ')}). Decide again if it is still needed."
                    )
                else:
                    notes.append(f"Execution failed: {outcome}.")
                roster = bool(plan.page_chain or plan.chain) and workflow.patched(_ROSTER_PATCH)
                if roster and proposal.kind is ActionKind.NOTIFY and plan.page_chain:
                    notes.append(await self._page(alert, proposal, plan))
                if proposal.policy is Policy.AUTO and plan.approvers:
                    done = notes[-1] if write is not None or outcome != "completed" else ""
                    text = (
                        f"Auto-executed: {proposal.action} — {proposal.description}. "
                        f"{alert.describe()}. {done}".strip()
                    )
                    if roster and self._summary:  # the people told get what the agents found
                        text += f"\n{self._summary}"
                    await self._tell(
                        "auto-executed",
                        plan.approvers[:1],
                        text,
                        about=alert if roster else None,
                    )

        self._set_status("opening work order")
        work_order: WorkOrderRef = await workflow.execute_activity_method(
            CmmsActivities.open_work_order,
            OpenWorkOrderInput(
                external_key=f"{info.workflow_id}/{info.run_id}",
                title=f"{alert.metric} drift on {alert.plc_id} ({alert.sigma:+.1f}σ)",
                description="\n".join(
                    [
                        alert.describe(),
                        *notes,
                        *self._evidence_note(),
                        *_trace_line(alert),
                        *(["", report.markdown] if report else []),
                    ]
                ),
                priority=_PRIORITY.get(alert.severity.value, WorkOrderPriority.HIGH),
                asset_id=alert.plc_id,
                # Due when the trend is forecast to reach its threshold (no forecast: none).
                due_date=alert.forecast.due.date() if alert.forecast else None,
            ),
            start_to_close_timeout=_WORK_ORDER_TIMEOUT,
            retry_policy=_RETRY,
        )
        if plan.approvers:
            summary = (
                f"{alert.describe()}. {proposal.action if proposal else 'No action'}: {outcome}. "
                f"Work order {work_order.id}."
                # Atlas refused it and the built-in store kept it: the approver must know.
                + (f" ({work_order.note})" if work_order.note else "")
            )
            await self._tell(
                "summary",
                plan.approvers[:1],
                summary,
                about=alert if plan.chain else None,
                kind=MessageKind.SUMMARY,
            )
            await workflow.start_child_workflow(
                OutcomeFollowUpWorkflow.run,
                FollowUpInput(
                    drift_workflow_id=info.workflow_id,
                    event_id=event_id,
                    recipient=plan.approvers[0],
                    work_order_id=work_order.id,
                    summary=summary,
                    wait_s=plan.outcome_wait_s,
                ),
                id=f"outcome-{info.workflow_id}-{info.run_id[:8]}",
                parent_close_policy=ParentClosePolicy.ABANDON,
            )
        self._set_status(outcome)
        return DriftResponseResult(
            workflow_id=info.workflow_id,
            status=outcome,
            event_id=event_id,
            action=proposal.action if proposal else None,
            policy=proposal.policy if proposal else None,
            approved_by=approved_by,
            value_written=write.value_written if write else None,
            value_read_back=write.value_read_back if write else None,
            work_order_id=work_order.id,
        )

    # -- agents ----------------------------------------------------------------------------
    async def _consult_agents(self, event_id: int, alert: DriftAlert) -> WeaverReport | None:
        """The Conductor's agents for a drift in parallel, then the Weaver's report."""
        workflow_id = workflow.info().workflow_id
        self._set_status("consulting agents")
        ask = AgentAsk(workflow_id=workflow_id, event_id=event_id, alert=alert)
        agents = agents_for(EventType.DRIFT)
        found = dict(
            zip(
                agents,
                await asyncio.gather(*(self._run_agent(a, ask) for a in agents)),
                strict=True,
            )
        )
        self._set_status("writing the report")
        report: WeaverReport | None = await self._run_agent(
            Agent.WEAVER,
            ask,
            WeaverInput(
                workflow_id=workflow_id,
                event_id=event_id,
                alert=alert,
                manuals=found.get(Agent.MANUAL_HUNTER),
                triage=found.get(Agent.ALARM_TRIAGE),
                watchman=found.get(Agent.WATCHMAN),
            ),
        )
        if report is not None:
            self._brief = f"{report.summary}\n\n_{report.generated_by}_"
            self._summary = f"Agents ({report.generated_by}): {report.summary}"
        return report

    async def _run_agent(self, agent: Agent, ask: AgentAsk, arg: Any = None) -> Any:
        route = ROUTES[agent]
        if arg is None:
            assert route.ask is not None, f"{agent} has no input for this event"
            arg = route.ask(ask)
        try:
            return await workflow.execute_activity_method(
                route.activity,
                arg,
                start_to_close_timeout=_AGENT_TIMEOUT,
                retry_policy=_AGENT_RETRY,
                summary=f"{agent.name.replace('_', ' ').title()}: "
                f"{ask.alert.metric} on {ask.alert.plc_id}",
            )
        except ActivityError as err:
            workflow.logger.warning("agent %s failed, continuing without it: %s", agent, err.cause)
            return None

    async def _ask_approval(
        self, alert: DriftAlert, proposal: ActionProposal, plan: ResponsePlan
    ) -> tuple[bool, str | None, str]:
        """Ask the on-duty approver; on timeout escalate once to the backup; then give up."""
        wf_id = workflow.info().workflow_id
        code = f"{workflow.random().randint(0, 9999):04d}"
        self._pending = PendingApproval(
            code=code,
            action=proposal.action,
            requested_at=workflow.now(),
            approvers=plan.approvers,
        )
        # Escalation order is the configured order: on duty first, then the backup.
        for attempt, recipient in enumerate(plan.approvers[:2]):
            self._set_status(
                f"waiting for {recipient} to approve {proposal.action} (code {code})"
                + (" — escalated" if attempt else "")
            )
            await workflow.execute_activity_method(
                NotifyActivities.request_approval,
                RequestApprovalInput(
                    workflow_id=wf_id,
                    code=code,
                    alert=alert,
                    proposal=proposal,
                    recipients=[recipient],
                    summary=self._summary,
                    escalation=attempt > 0,
                    timeout_s=plan.approval_timeout_s,
                ),
                start_to_close_timeout=_SHORT,
                retry_policy=_RETRY,
            )
            if await replied_within(
                lambda: self._decision is not None,
                plan.approval_timeout_s,
                "approval timer" + (" (backup)" if attempt else ""),
            ):
                break
        decision = self._decision
        self._pending = None
        if decision is None:
            await self._close_requests(code, "expired", None)
            return False, None, "not_approved_in_time"
        await self._close_requests(
            code, "approved" if decision.approve else "denied", decision.approver
        )
        if not decision.approve:
            return False, None, "denied"
        return True, decision.approver, "approved"

    async def _close_requests(self, code: str, status: str, by: str | None) -> None:
        await workflow.execute_activity_method(
            NotifyActivities.close_approval,
            CloseApprovalInput(
                workflow_id=workflow.info().workflow_id, code=code, status=status, answered_by=by
            ),
            start_to_close_timeout=_SHORT,
            retry_policy=_RETRY,
        )

    async def _tell(
        self,
        key: str,
        recipients: list[str],
        body: str,
        *,
        about: DriftAlert | None = None,
        kind: MessageKind = MessageKind.NOTICE,
        ack_code: str | None = None,
        fallbacks: dict[str, str] | None = None,
    ) -> int:
        reached: int = await workflow.execute_activity_method(
            NotifyActivities.send_message,
            SendMessageInput(
                dedup_key=f"{workflow.info().workflow_id}/{workflow.info().run_id}/{key}",
                recipients=recipients,
                body=body,
                workflow_id=workflow.info().workflow_id,
                kind=kind,
                ack_code=ack_code,
                fallbacks=fallbacks or {},
                about=MessageAbout(plc_id=about.plc_id, metric=about.metric, at=about.detected_at)
                if about
                else None,
            ),
            start_to_close_timeout=_SHORT,
            retry_policy=_RETRY,
        )
        return reached

    # -- the roster's escalation chains -------------------------------------------------------
    async def _ask_chain(
        self, alert: DriftAlert, proposal: ActionProposal, plan: ResponsePlan
    ) -> tuple[bool, str | None, str, list[str]]:
        """Ask the chain in order, each person for their step's time; a request that reached
        nobody (refused, or reported failed by Twilio's callback) moves on at once."""
        wf_id = workflow.info().workflow_id
        code = f"{workflow.random().randint(0, 9999):04d}"
        allowed = [a for st in plan.chain for a in (st.address, st.fallback) if a]
        self._pending = PendingApproval(
            code=code,
            action=proposal.action,
            requested_at=workflow.now(),
            approvers=list(dict.fromkeys(allowed)),
        )
        asked: list[str] = []
        before = ""  # why the previous person is not the one answering
        for round_ in range(plan.chain_repeat + 1):
            for i, step in enumerate(plan.chain):
                later = bool(round_ or i)
                self._set_status(
                    f"waiting for {step.person} to approve {proposal.action} (code {code})"
                    + (" — escalated" if later else "")
                )
                reached: int = await workflow.execute_activity_method(
                    NotifyActivities.request_approval,
                    RequestApprovalInput(
                        workflow_id=wf_id,
                        code=code,
                        alert=alert,
                        proposal=proposal,
                        recipients=[step.address],
                        summary=self._summary,
                        escalation=later,
                        escalation_reason=before,
                        timeout_s=step.wait_s,
                        fallbacks={step.address: step.fallback} if step.fallback else {},
                        attempt=round_,
                    ),
                    start_to_close_timeout=_SHORT,
                    retry_policy=_RETRY,
                )
                asked.append(f"{step.person} ({step.wait_s / 60:g} min)")
                if not reached:
                    self._unreachable.add((code, step.address))
                await replied_within(
                    lambda st=step: (
                        self._decision is not None  # type: ignore[misc]
                        or (code, st.address) in self._unreachable
                    ),
                    step.wait_s,
                    f"approval timer ({step.person})",
                )
                if self._decision is not None:
                    break
                before = f"{step.person} did not answer in {step.wait_s / 60:g} min"
                if (code, step.address) in self._unreachable:
                    asked[-1] = f"{step.person} (not reachable)"
                    before = f"{step.person} could not be reached"
            if self._decision is not None:
                break
        decision = self._decision
        self._pending = None
        if decision is None:
            await self._close_requests(code, "expired", None)
            return False, None, "not_approved_in_time", asked
        await self._close_requests(
            code, "approved" if decision.approve else "denied", decision.approver
        )
        if not decision.approve:
            return False, None, "denied", asked
        return True, decision.approver, "approved", asked

    async def _page(self, alert: DriftAlert, proposal: ActionProposal, plan: ResponsePlan) -> str:
        """Page the chain (a notify action: the backup first) until someone answers ACK."""
        code = f"{workflow.random().randint(0, 9999):04d}"
        self._page_code = code
        self._page_to = [a for st in plan.page_chain for a in (st.address, st.fallback) if a]
        paged: list[str] = []
        for round_ in range(plan.page_repeat + 1):
            for i, step in enumerate(plan.page_chain):
                self._set_status(f"paging {step.person} ({proposal.action}, ACK {code})")
                body = "\n".join(
                    [
                        f"FactoryLM page: {proposal.description}."
                        + (" (escalated: not acknowledged)" if round_ or i else ""),
                        f"{alert.describe()}.",
                        f"Why: {proposal.reason}.",
                        *([self._summary] if self._summary else []),
                        *_trace_line(alert),
                    ]
                )
                reached = await self._tell(
                    f"page/{round_}/{i}",
                    [step.address],
                    body,
                    about=alert,
                    kind=MessageKind.PAGE,
                    ack_code=code,
                    fallbacks={step.address: step.fallback} if step.fallback else {},
                )
                paged.append(step.person)
                if not reached:
                    self._unreachable.add((code, step.address))
                await replied_within(
                    lambda st=step: (
                        self._ack is not None  # type: ignore[misc]
                        or (code, st.address) in self._unreachable
                    ),
                    step.wait_s,
                    f"ACK timer ({step.person})",
                )
                if self._ack is not None:
                    return f"Paged {', then '.join(paged)}; acknowledged by {self._ack.by}."
        return f"Paged {', then '.join(paged)}; nobody acknowledged."

    async def _execute(
        self, proposal: ActionProposal, approved_by: str | None, plan: ResponsePlan
    ) -> tuple[PlcWriteResult | None, str]:
        if proposal.kind is not ActionKind.PLC_WRITE:
            return None, "completed"
        assert proposal.value is not None
        info = workflow.info()
        # A decision is about the machine as it was when it was made: the write happens
        # within the approval's validity (an automatic write within as long of being
        # planned) or not at all. Without the bound, a write queued while the edge worker is
        # down runs whenever it comes back, hours later. The edge checks the validity too.
        approval = proposal.policy is Policy.APPROVAL
        since = workflow.now() - self._decided_at if approval and self._decided_at else None
        window = plan.approval_validity_s - (since.total_seconds() if since else 0.0)
        expired = "approval_expired" if approval else "write_expired"
        if window <= 0:
            return None, expired
        self._set_status(f"writing {proposal.action}")
        try:
            result: PlcWriteResult = await workflow.execute_activity_method(
                PlcWriteActivities.write_plc_setpoint,
                PlcWriteInput(
                    action_id=f"{info.workflow_id}/{info.run_id}/{proposal.action}",
                    workflow_id=info.workflow_id,
                    action=proposal.action,
                    value=proposal.value,
                    approved_by=approved_by,
                    site=proposal.site,
                ),
                task_queue=plan.plc_task_queue,
                schedule_to_close_timeout=timedelta(seconds=window),
                start_to_close_timeout=_SHORT,
                # A dead edge worker is noticed in seconds; the retry then finds the audit row.
                heartbeat_timeout=timedelta(seconds=5),
                retry_policy=_PLC_RETRY,
            )
        except ActivityError as err:
            cause = err.cause
            # The server reports a window that ran out before any attempt started as
            # schedule-to-start (it derives that deadline from schedule-to-close).
            if isinstance(cause, ActivityTimeoutError) and cause.type in _WINDOW_TIMEOUTS:
                return None, expired
            kind = cause.type if isinstance(cause, ApplicationError) and cause.type else "error"
            if kind == APPROVAL_EXPIRED:
                return None, "approval_expired"
            return None, f"write_failed:{kind}"
        return result, "completed"

    def _set_status(self, status: str) -> None:
        self._status = status
        workflow.set_current_details(
            f"**{status}**" + (f"\n\n{self._brief}" if self._brief else "")
        )

    # -- human decisions ---------------------------------------------------------------------
    @workflow.update
    async def decide(self, decision: ApprovalDecision) -> str:
        self._decision = decision
        self._decided_at = workflow.now()
        self._pending = None
        return "approved" if decision.approve else "denied"

    @decide.validator
    def _validate_decide(self, decision: ApprovalDecision) -> None:
        pending = self._pending
        if pending is None:
            raise ValueError("no approval is pending for this workflow")
        if decision.approver not in pending.approvers:
            raise ValueError(f"{decision.approver} is not an authorised approver")
        # The code is what ties a decision to the message the approver was sent: without
        # it, anyone who reaches Temporal could decide in a configured approver's name.
        if decision.code is None:
            raise ValueError("a decision must carry the pending request's code")
        if decision.code != pending.code:
            raise ValueError(f"code {decision.code} does not match the pending request")

    @workflow.signal
    def add_evidence(self, alert: DriftAlert) -> None:
        """Further alarms for this PLC·metric while the workflow is open (signal-with-start
        delivers the first one too)."""
        self._evidence.append(alert)
        peak = max(self._evidence, key=lambda a: abs(a.sigma))
        workflow.upsert_search_attributes([SEVERITY.value_set(peak.severity.value)])

    def _evidence_note(self) -> list[str]:
        if len(self._evidence) <= 1:
            return []
        peak = max(self._evidence, key=lambda a: abs(a.sigma))
        return [f"{len(self._evidence)} alarms while open; peak {peak.sigma:+.1f}σ."]

    @workflow.signal
    def delivery_failed(self, failure: DeliveryFailure) -> None:
        """A request or page reached nobody on any channel (Twilio's status callback): the
        wait for that person ends now and the next one is asked."""
        self._unreachable.add((failure.code, failure.address))

    @workflow.signal
    def acknowledge(self, ack: Acknowledgement) -> None:
        """'ACK <code>' from a person paged: the escalation stops. Signals have no validator,
        so a wrong code or a person never paged is ignored here."""
        if self._ack is None and ack.code == self._page_code and ack.by in self._page_to:
            self._ack = ack

    @workflow.query
    def acknowledged_by(self) -> str | None:
        return self._ack.by if self._ack else None

    @workflow.query
    def pending_approval(self) -> PendingApproval | None:
        return self._pending

    @workflow.query
    def status(self) -> str:
        return self._status
