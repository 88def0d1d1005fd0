"""Where moto's Step Functions (executing mode) is made to answer as AWS does.

Installed by :mod:`image_cicd.local.moto_main` into the moto server process:

- ``StartExecution`` without ``name`` names the execution with a UUID (moto's
  interpreter used the name ``None``: a second start failed with
  ``ExecutionAlreadyExists`` and listings lost their ``name`` field); a given name is
  checked as AWS checks it.
- ``StopExecution`` aborts: the execution is ``ABORTED`` at once with the given error
  and cause, its history ends with ``ExecutionAborted`` and records nothing after
  it, no further state runs (and no ``Catch``: AWS runs none for a stopped
  execution), and its task tokens are closed - ``SendTaskSuccess``/``Failure``/
  ``Heartbeat`` answer ``TaskTimedOut`` ("the task associated with the token has
  already been closed"). moto accepted the call and changed nothing.
- ``SendTaskFailure`` delivers its ``cause`` (moto dropped it): the task's
  ``TaskFailed`` event, a ``Catch``'s ``{"Error", "Cause"}`` and the execution's
  failure carry it.
- Each end of an execution is published as EventBridge's "Step Functions Execution
  Status Change" event (``aws.states``) to ``events_url``, where the local stack
  routes it to the template's rules.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

DETAIL_TYPE = "Step Functions Execution Status Change"


def _millis(value: datetime.datetime | None) -> int | None:
    return int(value.timestamp() * 1000) if value else None


def status_change_event(execution: Any) -> dict[str, Any]:
    """The EventBridge event AWS emits when ``execution`` changes status."""
    status = str(execution.status)
    output = execution.output if status == "SUCCEEDED" else None
    detail = {
        "executionArn": execution.exec_arn,
        "stateMachineArn": execution.state_machine_arn,
        "name": execution.name,
        "status": status,
        "startDate": _millis(execution.start_date),
        "stopDate": _millis(execution.stop_date),
        "input": execution.execution_input,
        "output": None if output is None else json.dumps(output),
        "inputDetails": {"included": True},
        "outputDetails": {"included": True} if output is not None else None,
        "error": execution.error,
        "cause": execution.cause,
    }
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": DETAIL_TYPE,
        "source": "aws.states",
        "account": execution.account_id,
        "time": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": execution.region_name,
        "resources": [execution.exec_arn],
        "detail": detail,
    }


def _poster(events_url: str | None, headers: dict[str, str]) -> Callable[[dict[str, Any]], None]:
    def post(event: dict[str, Any]) -> None:
        if not events_url:
            return
        request = urllib.request.Request(  # noqa: S310 - the stack's loopback URL
            events_url,
            data=json.dumps(event).encode(),
            headers={"Content-Type": "application/json", **headers},
            method="POST",
        )

        def send() -> None:
            try:
                with urllib.request.urlopen(request, timeout=30):  # noqa: S310
                    pass
            except OSError as error:
                log.warning(
                    "status change event of %s not delivered: %s", event["resources"], error
                )

        threading.Thread(target=send, daemon=True).start()

    return post


def install(events_url: str | None = None, headers: dict[str, str] | None = None) -> None:
    """Patch moto's Step Functions interpreter backend and its API responses; the
    events go to ``events_url`` with ``headers``."""
    from moto.core.responses import ActionResult, EmptyResult
    from moto.stepfunctions.parser.api import ExecutionStatus, HistoryEventType, TaskTimedOut
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
    from moto.stepfunctions.parser.backend.execution import BaseExecutionWorkerCommunication
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend
    from moto.stepfunctions.responses import StepFunctionResponse

    post = _poster(events_url, headers or {})
    backend: Any = StepFunctionsParserBackend
    start_execution = backend.start_execution
    send_success, send_failure = backend.send_task_success, backend.send_task_failure
    send_heartbeat = backend.send_task_heartbeat
    terminated = BaseExecutionWorkerCommunication.terminated

    def start(self: Any, state_machine_arn: str, name: str | None = None, *a: Any, **k: Any) -> Any:
        if name:
            self._validate_name(name)
        return start_execution(self, state_machine_arn, name or str(uuid.uuid4()), *a, **k)

    def stop(
        self: Any, execution_arn: str, error: str | None = None, cause: str | None = None
    ) -> Any:
        execution = self.describe_execution(execution_arn)  # ExecutionDoesNotExist
        if execution.exec_status != ExecutionStatus.RUNNING:
            return execution
        now = datetime.datetime.now(datetime.UTC)
        env = execution.exec_worker.env
        if env is not None:
            env.set_stop(stop_date=now, error=error, cause=cause)  # no state runs from now
        execution.exec_status = ExecutionStatus.ABORTED
        execution.stop_date, execution.error, execution.cause = now, error, cause
        if env is not None:
            aborted = {k: v for k, v in (("error", error), ("cause", cause)) if v is not None}
            events = env.event_manager
            env.event_history_context.source_event_id = 0
            events.add_event(
                context=env.event_history_context,
                event_type=HistoryEventType.ExecutionAborted,
                event_details=EventDetails(executionAbortedEventDetails=aborted),  # type: ignore[typeddict-item]
            )
            events.add_event = lambda *args, **kwargs: 0  # the history is closed
            for endpoint in list(env.callback_pool_manager._pool.values()):
                endpoint.interrupt_all()  # a task waiting for its token returns
        post(status_change_event(execution))
        return execution

    def closed(self: Any, token: str) -> bool:
        for execution in self._get_executions():
            env = execution.exec_worker.env if execution.exec_worker else None
            if env is not None and env.callback_pool_manager.get(token) is not None:
                return bool(execution.exec_status != ExecutionStatus.RUNNING)
        return False

    def guarded(send: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: Any, task_token: str, *args: Any, **kwargs: Any) -> Any:
            if closed(self, task_token):
                message = "Task Timed Out: 'Provided task does not exist anymore'"
                raise TaskTimedOut(message, "TaskTimedOut", 400)  # moto's lacks its code
            return send(self, task_token, *args, **kwargs)

        return call

    def ended(self: Any) -> None:
        if self.execution.exec_status == ExecutionStatus.ABORTED:
            return  # stopped: status, history and event are final already
        terminated(self)
        post(status_change_event(self.execution))

    backend.start_execution = start
    backend.stop_execution = stop
    backend.send_task_success = guarded(send_success)
    backend.send_task_failure = guarded(send_failure)
    backend.send_task_heartbeat = guarded(send_heartbeat)
    BaseExecutionWorkerCommunication.terminated = ended  # type: ignore[method-assign]

    def stop_response(self: Any) -> Any:
        execution = self.stepfunction_backend.stop_execution(
            self._get_param("executionArn"), self._get_param("error"), self._get_param("cause")
        )
        return ActionResult({"stopDate": execution.stop_date})

    def failure_response(self: Any) -> Any:
        self.stepfunction_backend.send_task_failure(
            self._get_param("taskToken"),
            error=self._get_param("error"),
            cause=self._get_param("cause"),
        )
        return EmptyResult()

    response: Any = StepFunctionResponse
    response.stop_execution = stop_response
    response.send_task_failure = failure_response
