from clsf.cli import run

raise SystemExit(run())
