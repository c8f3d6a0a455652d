"""The `driftbench` command line (`app.cli.main:main`), its terminal tables, the demo."""
