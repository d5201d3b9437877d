"""The ``m3`` command line: one small module per verb (parse -> one library call -> print)."""
