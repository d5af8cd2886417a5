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
    }
)
