"""``python -m chute``: run the tour of the in-process queue."""

from ._demo import main

main()
