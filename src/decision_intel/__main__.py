from decision_intel.cli import main

raise SystemExit(main())
