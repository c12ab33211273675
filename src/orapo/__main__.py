"""``python -m orapo`` (also what ``accelerate launch -m orapo train ...`` runs)."""

from orapo.cli import main

main()
