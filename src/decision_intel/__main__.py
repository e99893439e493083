from decision_intel.cli.main import main

raise SystemExit(main())
