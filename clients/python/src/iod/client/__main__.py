"""`python -m iod.client` is the `iod` command of iod-client (the customer commands)."""

from iod.client.cli import main

main()
