"""`python -m packager.cli`: the same as the `edgepack` command."""
from . import main

main()
