"""Event type names written by the engine. Facts in the past tense; stable strings, never import paths."""

OPERATION_CREATED = "OperationCreated"
STEP_STARTED = "StepStarted"
STEP_COMPLETED = "StepCompleted"
STEP_FAILED = "StepFailed"
OPERATION_FAILED = "OperationFailed"
RESUME_STARTED = "ResumeStarted"
ROLLBACK_STARTED = "RollbackStarted"
UNDO_STARTED = "UndoStarted"
UNDO_COMPLETED = "UndoCompleted"
ROLLED_BACK = "RolledBack"
OPERATION_FINISHED = "OperationFinished"
# A run refused before anything took effect (credentials, SSH, the cluster locked by another run):
# finished, nothing to resume or roll back. Journals written before it have OperationFailed there.
OPERATION_REFUSED = "OperationRefused"
# the preflight hook's facts (the engine journals them; workflows fold them with their reducers)
PREFLIGHT_PASSED = "PreflightPassed"

ENGINE_EVENTS = frozenset(
    {
        OPERATION_CREATED,
        STEP_STARTED,
        STEP_COMPLETED,
        STEP_FAILED,
        OPERATION_FAILED,
        RESUME_STARTED,
        ROLLBACK_STARTED,
        UNDO_STARTED,
        UNDO_COMPLETED,
        ROLLED_BACK,
        OPERATION_FINISHED,
        OPERATION_REFUSED,
    }
)
