"""One module per `imagent` command; shared option groups and output helpers in `common`."""
