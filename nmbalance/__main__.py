from nmbalance.cli import main

raise SystemExit(main())
