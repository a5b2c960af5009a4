from ctpoller.cli import console

raise SystemExit(console())
