"""`python -m iod` is the `iod` command."""

from iod.cli.main import main

main()
