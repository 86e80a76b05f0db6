"""A corpus of bad inputs for every `shiftbook` command (issue 21): each must end in one clean
error line, never a traceback and never a silent success. ``cases.py`` is the table,
``runner.py`` runs it in-process and classifies each case."""
