from ctpoller.cli import main

raise SystemExit(main())
