"""The ``brsm`` command line.

Warnings from the libraries below it (cryptography's CryptographyDeprecationWarning when asyncssh is
imported, five lines on every check, backup and rollback; what asyncio or aiohttp log about a session
left open) are not the operator's business and must not reach stderr, where a cron job mails
everything it finds: they go to the logging system instead, which writes them to
``$BRSM_HOME/logs/brsm.log`` once the command opens it (brsm.cli.logfile.open_log), and nowhere before.
brsm's own errors are printed by the CLI, never logged to stderr. Set up here, before anything
imports a library.
"""
import logging as _logging

_logging.captureWarnings(True)
_warnings_log = _logging.getLogger("py.warnings")
_warnings_log.propagate = False
for _log in (_warnings_log, _logging.getLogger()):
    if not _log.handlers:
        _log.addHandler(_logging.NullHandler())  # not logging's last resort, which is stderr
