"""`python -m messageservice.cli`, as the `messageservice` script."""

from messageservice.cli import main

main()
